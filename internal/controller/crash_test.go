package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// Crash recovery (docs/apikey.md, "How issuance survives a crash"): the operator may be killed between any two API
// calls. These specs run a reconciler against the real API server that dies
// after its Nth write, for every N up to a whole issuance, then start a fresh
// one and check that the key converges to exactly one token that is both
// delivered and live.
var _ = Describe("Recovering from a crash", func() {
	It("converges to one delivered, live token whichever write it died after", func() {
		writes := issuanceWrites()
		Expect(writes).To(BeNumerically(">=", 4), "an issuance takes at least finalizer, Secret, record and status writes")
		for n := 0; n < writes; n++ {
			By(fmt.Sprintf("dying after write %d of %d", n, writes))
			key := crashAfter(n)
			restartAndConverge(key)
		}
	})

	It("issues a key whose finalizer admission set in three writes and no read of the API server", func() {
		key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace,
			Name: "budget-" + rand.String(6), Finalizers: []string{Finalizer}}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		c := newCrashingClient(-1)
		reads := &countingReader{Reader: c}
		r := newCrashReconciler(c)
		r.APIReader = reads
		runUntilDeadOrIdle(r, key)
		expectOneLiveToken(fetch(key))
		Expect(c.writes).To(Equal(3), "Secret, record and status: with the user's create, four writes per key (docs/benchmarks.md)")
		Expect(reads.n).To(BeZero(), "issuance read the API server directly")
	})

	It("mints afresh when it died after delivering the Secret but before the record", func() {
		key := crashAfter(2) // finalizer, Secret
		Expect(recordsOf(key)).To(BeEmpty())
		stale := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: apikeysv1alpha1.DefaultSecretName(key.Name)}, stale)).To(Succeed())

		_, rec := expectOneLiveToken(restartAndConverge(key))
		Expect(rec.Spec.TokenHash).NotTo(Equal(stale.Annotations[apikeysv1alpha1.TokenHashAnnotation]),
			"a token the operator cannot prove it delivered must never go live")
	})

	It("keeps the recorded token when status lost the issuance, or never had it", func() {
		died := crashAfter(3) // finalizer, Secret, record: status never written
		whole := newCrashKey()
		restartAndConverge(whole) // a whole issuance, whose status is then wiped
		for _, key := range []*apikeysv1alpha1.ApiKey{died, whole} {
			before := recordsOf(key)
			Expect(before).To(HaveLen(1))
			stale := fetch(key)
			lost := stale.DeepCopy()
			lost.Status = apikeysv1alpha1.ApiKeyStatus{}
			Expect(k8sClient.Status().Patch(ctx, lost, client.MergeFrom(stale))).To(Succeed())

			_, rec := expectOneLiveToken(restartAndConverge(key))
			Expect(rec.Name).To(Equal(before[0].Name), "the record, not status, says which token lives")
		}
	})
})

// Rotation under crashes (docs/apikey.md, Rotation): the same sweep across every write of
// a rotation, with and without a grace period.
var _ = Describe("Recovering from a crash during a rotation", func() {
	for _, grace := range []time.Duration{0, time.Hour} {
		It(fmt.Sprintf("delivers the new token once and keeps the old one only for its grace period (%s)", grace), func() {
			writes := rotationWrites(grace)
			Expect(writes).To(BeNumerically(">=", 3), "a rotation takes at least record, Secret and old-record writes")
			for n := 0; n < writes; n++ {
				By(fmt.Sprintf("dying after write %d of %d", n, writes))
				key, oldTok := issuedCrashKey(grace)
				c := newCrashingClient(n)
				runUntilDeadOrIdle(newCrashReconciler(c), key)
				Expect(c.dead).To(BeTrue(), "the reconciler finished before its write %d", n+1)
				expectSecretAuthenticates(key)
				convergeRotation(key, oldTok, grace)
			}
		})
	}
})

// issuedCrashKey creates a key with the given grace period, issues its
// token and then asks for a rotation. It returns the key and its first token.
func issuedCrashKey(grace time.Duration) (*apikeysv1alpha1.ApiKey, string) {
	GinkgoHelper()
	key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace, Name: "crash-" + rand.String(6)}}
	key.Spec.Rotation = &apikeysv1alpha1.Rotation{GracePeriod: &metav1.Duration{Duration: grace}}
	Expect(k8sClient.Create(ctx, key)).To(Succeed())
	key = restartAndConverge(key)
	tok, _ := readToken(key)
	patch := client.MergeFrom(key.DeepCopy())
	key.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "crash-sweep"}
	Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())
	return key, tok
}

// rotationWrites counts the API writes of one uninterrupted rotation.
func rotationWrites(grace time.Duration) int {
	GinkgoHelper()
	key, oldTok := issuedCrashKey(grace)
	c := newCrashingClient(-1)
	runUntilDeadOrIdle(newCrashReconciler(c), key)
	Expect(c.dead).To(BeFalse())
	convergeRotation(key, oldTok, grace)
	return c.writes
}

// expectSecretAuthenticates checks what a consumer reading the Secret at
// this moment would get: a token with a record that still accepts it.
func expectSecretAuthenticates(key *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	secret := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: apikeysv1alpha1.DefaultSecretName(key.Name)}, secret)).To(Succeed())
	tok := string(secret.Data[apikeysv1alpha1.SecretTokenKey])
	seenTokens.add(tok)
	for _, rec := range recordsOf(key) {
		if rec.Spec.TokenHash == token.Hash(tok) {
			Expect(rec.Spec.ValidUntil == nil || time.Now().Before(rec.Spec.ValidUntil.Time)).To(BeTrue(),
				"the Secret's token is past its grace period")
			return
		}
	}
	Fail("the Secret holds a token with no record: a consumer reading it now would be refused")
}

// convergeRotation restarts the operator and checks the outcome docs/apikey.md's Rotation section
// allows: the rotation done, its new token the one live record and in the
// Secret, and the old token kept for its grace period, or gone without one.
func convergeRotation(key *apikeysv1alpha1.ApiKey, oldTok string, grace time.Duration) {
	GinkgoHelper()
	r, got := restart(key)
	Expect(got.Status.LastRotateRequest).To(Equal("crash-sweep"))
	newTok, live := expectLiveToken(got)
	Expect(newTok).NotTo(Equal(oldTok), "the rotation was not done")
	Expect(live.Spec.Issuance).To(BeNumerically(">=", 2))

	var old *apikeysv1alpha1.ApiKeyRecord
	for _, rec := range recordsOf(got) {
		if rec.Spec.TokenHash == token.Hash(oldTok) {
			old = &rec
		}
	}
	if grace == 0 {
		Expect(old).To(BeNil(), "without a grace period the old token goes at once")
	} else {
		Expect(old).NotTo(BeNil(), "the old token lost its grace period")
		Expect(old.Spec.ValidUntil).To(HaveValue(HaveField("Time", BeTemporally("==", live.Spec.IssuedAt.Add(grace+time.Second)))),
			"the grace period counts from the rotation, rounded up to the second")
		Expect(got.Status.PreviousKeys).To(ConsistOf(HaveField("TokenHint", token.Hint(oldTok))))
	}
	expectNoTokenInEvents(r.Recorder.(*events.FakeRecorder))
}

// issuanceWrites counts the API writes of one uninterrupted issuance.
func issuanceWrites() int {
	GinkgoHelper()
	key := newCrashKey()
	c := newCrashingClient(-1)
	runUntilDeadOrIdle(newCrashReconciler(c), key)
	Expect(c.dead).To(BeFalse())
	restartAndConverge(key)
	return c.writes
}

// crashAfter creates a key and runs a reconciler on it that dies after n writes.
func crashAfter(n int) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	key := newCrashKey()
	c := newCrashingClient(n)
	runUntilDeadOrIdle(newCrashReconciler(c), key)
	Expect(c.dead).To(BeTrue(), "the reconciler finished before its write %d", n+1)
	return key
}

// restartAndConverge runs a fresh reconciler, as a restarted operator would,
// until a pass succeeds, then checks the outcome a crash may leave (docs/apikey.md): one
// record, whose token is the one in the key's Secret.
func restartAndConverge(key *apikeysv1alpha1.ApiKey) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	r, got := restart(key)
	expectOneLiveToken(got)
	expectNoTokenInEvents(r.Recorder.(*events.FakeRecorder))
	return got
}

// restart runs a fresh reconciler, as a restarted operator would, until a
// pass succeeds without asking to run again at once, and returns it with the
// key, which must then be Ready.
func restart(key *apikeysv1alpha1.ApiKey) (*ApiKeyReconciler, *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	r := newCrashReconciler(newCrashingClient(-1))
	var err error
	for range 5 {
		var res ctrl.Result
		res, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
		if err == nil && (res.RequeueAfter == 0 || res.RequeueAfter > time.Second) {
			break
		}
	}
	Expect(err).NotTo(HaveOccurred(), "the restarted reconciler did not converge")
	got := fetch(key)
	Expect(condition(got, apikeysv1alpha1.ConditionReady)).To(HaveField("Status", metav1.ConditionTrue))
	return r, got
}

func runUntilDeadOrIdle(r *ApiKeyReconciler, key *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	c := r.Client.(*crashingClient)
	for range 5 {
		_, _ = r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
		if c.dead {
			return
		}
	}
}

func newCrashKey() *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace, Name: "crash-" + rand.String(6)}}
	Expect(k8sClient.Create(ctx, key)).To(Succeed())
	return key
}

func newCrashReconciler(c *crashingClient) *ApiKeyReconciler {
	return &ApiKeyReconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(100), Policy: testPolicy}
}

// expectNoTokenInEvents checks the events a crash-spec reconciler emitted
// against every token the suite has seen.
func expectNoTokenInEvents(rec *events.FakeRecorder) {
	GinkgoHelper()
	var notes []string
	for len(rec.Events) > 0 {
		notes = append(notes, <-rec.Events)
	}
	all := strings.Join(notes, "\n")
	for _, tok := range seenTokens.all() {
		if strings.Contains(all, tok) {
			Fail("a token (" + token.Hint(tok) + ") appears in an event")
		}
	}
}

// countingReader counts the reads a reconciler makes past its cache.
type countingReader struct {
	client.Reader
	n int
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.n++
	return c.Reader.Get(ctx, key, obj, opts...)
}

func (c *countingReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	c.n++
	return c.Reader.List(ctx, list, opts...)
}

var errCrashed = errors.New("the operator was killed")

// crashingClient is the real API client of a process that is killed just
// before its (limit+1)th write: from then on nothing it does reaches the API
// server. A negative limit never kills it.
type crashingClient struct {
	client.Client
	mu     sync.Mutex
	limit  int
	writes int
	dead   bool
}

func newCrashingClient(limit int) *crashingClient {
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	return &crashingClient{Client: c, limit: limit}
}

func (c *crashingClient) alive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errCrashed
	}
	return nil
}

func (c *crashingClient) write() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || (c.limit >= 0 && c.writes == c.limit) {
		c.dead = true
		return errCrashed
	}
	c.writes++
	return nil
}

func (c *crashingClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := c.alive(); err != nil {
		return err
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

func (c *crashingClient) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := c.alive(); err != nil {
		return err
	}
	return c.Client.List(ctx, list, opts...)
}

func (c *crashingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.Client.Create(ctx, obj, opts...)
}

func (c *crashingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.Client.Update(ctx, obj, opts...)
}

func (c *crashingClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.Client.Patch(ctx, obj, patch, opts...)
}

func (c *crashingClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.Client.Delete(ctx, obj, opts...)
}

func (c *crashingClient) DeleteAllOf(ctx context.Context, obj client.Object, opts ...client.DeleteAllOfOption) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.Client.DeleteAllOf(ctx, obj, opts...)
}

func (c *crashingClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.Client.Apply(ctx, obj, opts...)
}

func (c *crashingClient) Status() client.SubResourceWriter {
	return &crashingStatus{c: c, w: c.Client.Status()}
}

type crashingStatus struct {
	c *crashingClient
	w client.SubResourceWriter
}

func (s *crashingStatus) Create(ctx context.Context, obj, sub client.Object, opts ...client.SubResourceCreateOption) error {
	if err := s.c.write(); err != nil {
		return err
	}
	return s.w.Create(ctx, obj, sub, opts...)
}

func (s *crashingStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	if err := s.c.write(); err != nil {
		return err
	}
	return s.w.Update(ctx, obj, opts...)
}

func (s *crashingStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if err := s.c.write(); err != nil {
		return err
	}
	return s.w.Patch(ctx, obj, patch, opts...)
}

func (s *crashingStatus) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
	if err := s.c.write(); err != nil {
		return err
	}
	return s.w.Apply(ctx, obj, opts...)
}
