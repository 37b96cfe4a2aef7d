package controller

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
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
		c := newCrash(-1)
		var reads int
		r := newCrashReconciler(c)
		r.APIReader = countingReads(c.newClient(), &reads)
		runUntilDeadOrIdle(r, c, key)
		expectOneLiveToken(fetch(key))
		Expect(c.writes).To(Equal(3), "Secret, record and status: with the user's create, four writes per key (docs/benchmarks.md)")
		Expect(reads).To(BeZero(), "issuance read the API server directly")
	})

	It("mints afresh when it died after delivering the Secret but before the record", func() {
		key := crashAfter(2) // finalizer, Secret
		Expect(recordsOf(key)).To(BeEmpty())
		stale := &corev1.Secret{}
		secretKey := client.ObjectKey{Namespace: key.Namespace, Name: apikeysv1alpha1.DefaultSecretName(key.Name)}
		Expect(k8sClient.Get(ctx, secretKey, stale)).To(Succeed())

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

// Deletion at scale: deleting a key deletes its records one by one, by name,
// from what the controller knows, and never asks kube-apiserver to select
// them: a deletecollection by label, or a List, is matched against every
// record in the cluster (about 200 ms of kube-apiserver time at 100k
// records, docs/scale.md). A revoked key, which the auth server does not
// refuse on its own, is worth asking the API server for its records.
var _ = Describe("Deleting the records of a key", func() {
	It("deletes a deleted key's records by name, reading nothing past the cache", func() {
		key := newCrashKey()
		restart(key)
		Expect(recordsOf(key)).To(HaveLen(1))
		Expect(k8sClient.Delete(ctx, fetch(key))).To(Succeed())

		reads, collections := passCounting(key, testPolicy, "")
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(key), &apikeysv1alpha1.ApiKey{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the finalizer was not removed")
		Expect(recordsOf(key)).To(BeEmpty())
		Expect(collections).To(BeZero(), "the records were selected by kube-apiserver (deletecollection)")
		Expect(reads).To(BeZero(), "the deletion read the API server directly")
	})

	It("deletes a revoked key's records by name, one the cache has not shown included", func() {
		key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace, Name: "revoke-" + rand.String(6)},
			Spec: apikeysv1alpha1.ApiKeySpec{TTL: &metav1.Duration{Duration: 2 * time.Hour}}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		restart(key)
		records := recordsOf(key)
		Expect(records).To(HaveLen(1))
		// A record another replica wrote, which this one's cache has not
		// shown yet.
		sum := sha256.Sum256([]byte(rand.String(32)))
		unseen := records[0].DeepCopy()
		unseen.ObjectMeta = metav1.ObjectMeta{Name: apikeysv1alpha1.RecordName(sum), Labels: records[0].Labels}
		unseen.Spec.TokenHash = token.FormatHash(sum)
		Expect(k8sClient.Create(ctx, unseen)).To(Succeed())

		// The operator restarts with a --max-ttl the key now breaks.
		stricter := policy.New(policy.Options{MaxTTL: time.Hour})
		_, collections := passCounting(key, stricter, unseen.Name)
		Expect(condition(fetch(key), apikeysv1alpha1.ConditionStalled)).To(HaveField("Status", metav1.ConditionTrue))
		Expect(recordsOf(key)).To(BeEmpty(), "a record of the revoked key stayed, and its token with it")
		Expect(collections).To(BeZero(), "the records were selected by kube-apiserver (deletecollection)")
	})

	It("ends a revoked key's tokens at once, even when its status cannot be written", func() {
		key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace, Name: "unwritable-" + rand.String(6)},
			Spec: apikeysv1alpha1.ApiKeySpec{TTL: &metav1.Duration{Duration: 2 * time.Hour}}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		restart(key)
		Expect(recordsOf(key)).To(HaveLen(1))

		By("the operator restarts with a --max-ttl the key now breaks, and kube-apiserver refuses every status write")
		// A namespace editor can grow the key until any write of it is too
		// large; deletion waits for the status patch, revocation must not.
		r := newCrashReconciler(newCrash(-1))
		r.Policy = policy.New(policy.Options{MaxTTL: time.Hour})
		r.Client = interceptor.NewClient(r.Client.(client.WithWatch), interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, cl client.Client, sub string, obj client.Object, patch client.Patch,
				opts ...client.SubResourcePatchOption) error {
				if sub == "status" {
					return apierrors.NewRequestEntityTooLargeError("limit is 1572864")
				}
				return cl.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		})
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
		Expect(err).To(HaveOccurred(), "the status patch went through")
		records := recordsOf(key)
		Expect(records).NotTo(BeEmpty(), "the records went although status could not be written")
		for _, rec := range records {
			Expect(rec.Spec.ValidUntil).NotTo(BeNil(), "record %s of the revoked key still accepts its token", rec.Name)
			Expect(rec.Spec.ValidUntil.Time).NotTo(BeTemporally(">", time.Now()), "record %s of the revoked key still accepts its token", rec.Name)
		}
	})

	It("drops condition types it did not write once they leave its report no room, and keeps them while they do", func() {
		key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace, Name: "padded-" + rand.String(6)},
			Spec: apikeysv1alpha1.ApiKeySpec{TTL: &metav1.Duration{Duration: 2 * time.Hour}}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		restart(key)

		By("a holder of apikeys/status fills status.conditions to the schema's maxItems")
		got := fetch(key)
		patch := client.MergeFrom(got.DeepCopy())
		for i := 0; len(got.Status.Conditions) < 8; i++ {
			meta.SetStatusCondition(&got.Status.Conditions, metav1.Condition{Type: fmt.Sprintf("Padding%d", i),
				Status: metav1.ConditionTrue, Reason: "Padding", ObservedGeneration: got.Generation})
		}
		Expect(k8sClient.Status().Patch(ctx, got, patch)).To(Succeed())

		By("a pass with nothing new to report leaves them: no other writer is fought over its conditions")
		_, got = restart(key)
		Expect(condition(got, "Padding0")).NotTo(BeNil(), "a condition someone else wrote went while there was room")

		By("the operator restarts with a --max-ttl the key now breaks: its report must fit")
		r := newCrashReconciler(newCrash(-1))
		r.Policy = policy.New(policy.Options{MaxTTL: time.Hour})
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
		Expect(err).NotTo(HaveOccurred())
		got = fetch(key)
		Expect(condition(got, apikeysv1alpha1.ConditionStalled)).To(HaveField("Reason", apikeysv1alpha1.ReasonInvalidExpiry))
		for _, c := range got.Status.Conditions {
			Expect(conditionTypes).To(ContainElement(c.Type), "a condition the operator did not write stayed")
		}
		Expect(recordsOf(key)).To(BeEmpty(), "the revoked key's records stayed")
	})
})

// passCounting runs one pass on key of a reconciler with policy p, whose
// cache does not show the record named hidden, and counts its reads past
// the cache and the deletecollections it sent.
func passCounting(key *apikeysv1alpha1.ApiKey, p *policy.Policy, hidden string) (reads, collections int) {
	GinkgoHelper()
	c := newCrash(-1)
	r := newCrashReconciler(c)
	r.Policy = p
	r.APIReader = countingReads(c.newClient(), &reads)
	r.Client = interceptor.NewClient(c.newClient(), interceptor.Funcs{
		List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := cl.List(ctx, list, opts...); err != nil {
				return err
			}
			if records, ok := list.(*apikeysv1alpha1.ApiKeyRecordList); ok {
				records.Items = slices.DeleteFunc(records.Items, func(rec apikeysv1alpha1.ApiKeyRecord) bool {
					return rec.Name == hidden
				})
			}
			return nil
		},
		DeleteAllOf: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			collections++
			return cl.DeleteAllOf(ctx, obj, opts...)
		},
	})
	_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
	Expect(err).NotTo(HaveOccurred())
	return reads, collections
}

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
				c := newCrash(n)
				runUntilDeadOrIdle(newCrashReconciler(c), c, key)
				Expect(c.dead).To(BeTrue(), "the reconciler finished before its write %d", n+1)
				expectSecretAuthenticates(key)
				convergeRotation(key, oldTok, grace)
			}
		})
	}
})

// A crash between delivering a rotated token and retiring the old one,
// then an edit of the Secret by anyone who may update Secrets in the
// namespace: the restart must still take the token the Secret holds as
// delivered, not undo the rotation and refuse the token its consumers
// already read.
var _ = Describe("Recovering from a crash during a rotation, with the Secret's metadata edited meanwhile", func() {
	It("keeps the token the Secret holds when its token-hash annotation was forged or removed, or its owner reference stripped", func() {
		writes := rotationWrites(0)
		for _, tamper := range []struct {
			what string
			edit func(*corev1.Secret, string)
		}{
			{"forging the token-hash annotation", func(s *corev1.Secret, oldTok string) {
				s.Annotations[apikeysv1alpha1.TokenHashAnnotation] = token.Hash(oldTok)
			}},
			{"removing the token-hash annotation", func(s *corev1.Secret, _ string) {
				delete(s.Annotations, apikeysv1alpha1.TokenHashAnnotation)
			}},
			{"stripping the owner reference", func(s *corev1.Secret, _ string) { s.OwnerReferences = nil }},
		} {
			delivered := 0
			for n := 0; n < writes; n++ {
				key, oldTok := issuedCrashKey(0)
				c := newCrash(n)
				runUntilDeadOrIdle(newCrashReconciler(c), c, key)
				Expect(c.dead).To(BeTrue(), "the reconciler finished before its write %d", n+1)
				held, secret := readToken(fetch(key))
				if held == oldTok {
					continue // the new token never reached the Secret
				}
				delivered++
				By(fmt.Sprintf("dying after write %d of %d, the new token in the Secret, then %s", n, writes, tamper.what))
				patch := client.MergeFrom(secret.DeepCopy())
				tamper.edit(secret, oldTok)
				Expect(k8sClient.Patch(ctx, secret, patch)).To(Succeed())

				r, got := restart(key)
				Expect(recordsOf(got)).To(ConsistOf(And(
					HaveField("Spec.TokenHash", token.Hash(held)),
					HaveField("Spec.ValidUntil", BeNil()),
				)), "the restart undid a delivered rotation: the token already in the Secret is refused")
				Expect(got.Status.SecretDeletedAt).To(BeNil(), "status says the Secret that holds the live token is gone")
				expectNoTokenInEvents(r.Recorder.(*events.FakeRecorder))
			}
			Expect(delivered).To(BeNumerically(">", 0), "no crash point left the new token in the Secret")
		}
	})
})

// client-go retries a create that kube-apiserver answered with a 5xx and
// Retry-After, though it may have stored the object: the retry then finds
// the Secret there. Holding the new token, it is the delivery.
var _ = Describe("A rotated token's Secret stored, though the create's answer was an error", func() {
	It("takes the Secret that holds the new token as delivered", func() {
		key, oldTok := issuedCrashKey(0)
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace,
			Name: apikeysv1alpha1.DefaultSecretName(key.Name)}})).To(Succeed())
		r := newCrashReconciler(newCrash(-1))
		r.Client = interceptor.NewClient(r.Client.(client.WithWatch), interceptor.Funcs{
			Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if err := cl.Create(ctx, obj, opts...); err != nil {
					return err
				}
				if _, isSecret := obj.(*corev1.Secret); isSecret {
					return apierrors.NewAlreadyExists(corev1.Resource("secrets"), obj.GetName())
				}
				return nil
			},
		})
		Eventually(func() error {
			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
			return err
		}, timeout, interval).Should(Succeed())
		got := fetch(key)
		newTok, live := expectLiveToken(got)
		Expect(token.Hash(newTok)).NotTo(Equal(token.Hash(oldTok)), "the rotation was not done")
		secret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: live.Spec.SecretName}, secret)).To(Succeed())
		Expect(live.Spec.SecretUID).To(Equal(string(secret.UID)), "the record does not pin the Secret the token went into")
		expectNoTokenInEvents(r.Recorder.(*events.FakeRecorder))
	})
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
	c := newCrash(-1)
	runUntilDeadOrIdle(newCrashReconciler(c), c, key)
	Expect(c.dead).To(BeFalse())
	convergeRotation(key, oldTok, grace)
	return c.writes
}

// expectSecretAuthenticates checks what a consumer reading the Secret at
// this moment would get: a token with a record that still accepts it.
func expectSecretAuthenticates(key *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	secret := &corev1.Secret{}
	secretKey := client.ObjectKey{Namespace: key.Namespace, Name: apikeysv1alpha1.DefaultSecretName(key.Name)}
	Expect(k8sClient.Get(ctx, secretKey, secret)).To(Succeed())
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
	c := newCrash(-1)
	runUntilDeadOrIdle(newCrashReconciler(c), c, key)
	Expect(c.dead).To(BeFalse())
	restartAndConverge(key)
	return c.writes
}

// crashAfter creates a key and runs a reconciler on it that dies after n writes.
func crashAfter(n int) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	key := newCrashKey()
	c := newCrash(n)
	runUntilDeadOrIdle(newCrashReconciler(c), c, key)
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
	r := newCrashReconciler(newCrash(-1))
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

// runUntilDeadOrIdle runs r, whose process is c, until c dies or five
// passes have run.
func runUntilDeadOrIdle(r *ApiKeyReconciler, c *crash, key *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	for range 5 {
		showSecrets(r)
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

// newCrashReconciler is a reconciler of process c, without a cache: it
// reads and writes the API server directly through one of c's clients.
func newCrashReconciler(c *crash) *ApiKeyReconciler {
	GinkgoHelper()
	direct := c.newClient()
	return &ApiKeyReconciler{Client: direct, APIReader: direct, Recorder: events.NewFakeRecorder(100), Policy: testPolicy}
}

// showSecrets gives r's watch of delivered Secrets what the API server
// holds now, as the manager's watch shows it once caught up: the crash
// specs' reconcilers have no watches, and their client reads the API server
// as if it were an up-to-date cache.
func showSecrets(r *ApiKeyReconciler) {
	GinkgoHelper()
	if r.secrets == nil {
		r.secrets = queuedSecrets(nil)
		DeferCleanup(r.secrets.queue.ShutDown)
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	Expect(k8sClient.List(ctx, list, client.InNamespace(crashNamespace),
		client.MatchingLabels{apikeysv1alpha1.ManagedByLabel: apikeysv1alpha1.ManagedByValue})).To(Succeed())
	objs := make([]any, len(list.Items))
	for i := range list.Items {
		objs[i] = &list.Items[i]
	}
	Expect(r.secrets.Replace(objs, list.ResourceVersion)).To(Succeed())
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

// countingReads counts the reads a reconciler makes past its cache through
// reader, which it returns wrapped.
func countingReads(reader client.WithWatch, n *int) client.Reader {
	return interceptor.NewClient(reader, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			*n++
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			*n++
			return c.List(ctx, list, opts...)
		},
	})
}

var errCrashed = errors.New("the operator was killed")

// crash is an operator process that is killed just before its (limit+1)th
// API write: from then on nothing it does reaches the API server. A negative
// limit never kills it. It counts the writes it let through.
type crash struct {
	mu     sync.Mutex
	limit  int
	writes int
	dead   bool
}

func newCrash(limit int) *crash { return &crash{limit: limit} }

// newClient is a direct client of the API server (no cache) that dies with c.
func (c *crash) newClient() client.WithWatch {
	GinkgoHelper()
	direct, err := client.NewWithWatch(testEnv.Config, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	return c.client(direct)
}

// client puts every call of inner through controller-runtime's interceptor:
// reads fail once the process is dead, and each write (create, update,
// patch, delete, apply, on an object or its status) is counted, or kills it.
func (c *crash) client(inner client.WithWatch) client.WithWatch {
	return interceptor.NewClient(inner, interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			return gated(c.alive, func() error { return cl.Get(ctx, key, obj, opts...) })
		},
		List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			return gated(c.alive, func() error { return cl.List(ctx, list, opts...) })
		},
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			return gated(c.write, func() error { return cl.Create(ctx, obj, opts...) })
		},
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			return gated(c.write, func() error { return cl.Update(ctx, obj, opts...) })
		},
		Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			return gated(c.write, func() error { return cl.Patch(ctx, obj, patch, opts...) })
		},
		Delete: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			return gated(c.write, func() error { return cl.Delete(ctx, obj, opts...) })
		},
		DeleteAllOf: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			return gated(c.write, func() error { return cl.DeleteAllOf(ctx, obj, opts...) })
		},
		Apply: func(ctx context.Context, cl client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			return gated(c.write, func() error { return cl.Apply(ctx, obj, opts...) })
		},
		SubResourceCreate: func(ctx context.Context, cl client.Client, sub string, obj, subObj client.Object,
			opts ...client.SubResourceCreateOption) error {
			return gated(c.write, func() error { return cl.SubResource(sub).Create(ctx, obj, subObj, opts...) })
		},
		SubResourceUpdate: func(ctx context.Context, cl client.Client, sub string, obj client.Object,
			opts ...client.SubResourceUpdateOption) error {
			return gated(c.write, func() error { return cl.SubResource(sub).Update(ctx, obj, opts...) })
		},
		SubResourcePatch: func(ctx context.Context, cl client.Client, sub string, obj client.Object, patch client.Patch,
			opts ...client.SubResourcePatchOption) error {
			return gated(c.write, func() error { return cl.SubResource(sub).Patch(ctx, obj, patch, opts...) })
		},
		SubResourceApply: func(ctx context.Context, cl client.Client, sub string, obj runtime.ApplyConfiguration,
			opts ...client.SubResourceApplyOption) error {
			return gated(c.write, func() error { return cl.SubResource(sub).Apply(ctx, obj, opts...) })
		},
	})
}

// gated makes call only if gate lets it through.
func gated(gate, call func() error) error {
	if err := gate(); err != nil {
		return err
	}
	return call()
}

func (c *crash) alive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errCrashed
	}
	return nil
}

func (c *crash) write() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || (c.limit >= 0 && c.writes == c.limit) {
		c.dead = true
		return errCrashed
	}
	c.writes++
	return nil
}

func (c *crash) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}
