package controller

import (
	"context"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// Trust boundaries (docs/security.md): what someone with less than the operator's
// rights can write never decides which hash is live.
var _ = Describe("Trust boundaries", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	// forgeStatus writes status as a holder of apikeys/status would: a
	// record name for a token of its choosing, issued years ahead.
	forgeStatus := func(key *apikeysv1alpha1.ApiKey) string {
		GinkgoHelper()
		chosen, err := token.Generate("ak")
		Expect(err).NotTo(HaveOccurred())
		sum := token.Sum(chosen)
		Eventually(func() error {
			cur := fetch(key)
			forged := cur.DeepCopy()
			forged.Status.RecordName = apikeysv1alpha1.RecordName(sum)
			forged.Status.IssuedAt = &metav1.Time{Time: time.Now().AddDate(5, 0, 0).Truncate(time.Second)}
			return k8sClient.Status().Patch(ctx, forged, client.MergeFromWithOptions(cur, client.MergeFromWithOptimisticLock{}))
		}, timeout, interval).Should(Succeed())
		return apikeysv1alpha1.RecordName(sum)
	}
	expectNoRecord := func(name string) {
		GinkgoHelper()
		Consistently(func() bool {
			err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &apikeysv1alpha1.ApiKeyRecord{})
			return apierrors.IsNotFound(err)
		}, 2*time.Second, 100*time.Millisecond).Should(BeTrue(), "a record was created for a hash the operator did not mint")
	}

	It("rotates on the annotation whatever status says was acted on, and never keeps a token for a forged previousKeys", func() {
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		oldTok, before := expectOneLiveToken(key)

		By("forging status: the next request already acted on, and the old token listed as in its grace period")
		Eventually(func() error {
			cur := fetch(key)
			forged := cur.DeepCopy()
			forged.Status.LastRotateRequest = "forged-ahead"
			forged.Status.PreviousKeys = []apikeysv1alpha1.PreviousKey{{TokenHint: token.Hint(oldTok),
				ValidUntil: metav1.Time{Time: time.Now().AddDate(1, 0, 0).Truncate(time.Second)}}}
			return k8sClient.Status().Patch(ctx, forged, client.MergeFromWithOptions(cur, client.MergeFromWithOptimisticLock{}))
		}, timeout, interval).Should(Succeed())

		patch := client.MergeFrom(key.DeepCopy())
		key.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "forged-ahead"}
		Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())
		// Status already says "forged-ahead": wait on the records instead.
		Eventually(func(g Gomega) {
			records := recordsOf(key)
			g.Expect(records).To(HaveLen(1))
			g.Expect(records[0].Spec.RotateRequest).To(Equal("forged-ahead"))
			g.Expect(fetch(key).Status.RecordName).To(Equal(records[0].Name))
		}, timeout, interval).Should(Succeed())
		key = fetch(key)
		_, after := expectOneLiveToken(key)
		Expect(after.Name).NotTo(Equal(before.Name), "the record, not status, says which request was answered")
		Expect(after.Spec.RotateRequest).To(Equal("forged-ahead"))
		Expect(key.Status.PreviousKeys).To(BeEmpty(), "status is rewritten from the records")
		err := k8sClient.Get(ctx, client.ObjectKey{Name: before.Name}, &apikeysv1alpha1.ApiKeyRecord{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the old token outlived a rotation without a grace period")
	})

	It("never obeys a forged status.recordName on an issued key: the key is Stalled, its token and expiry unchanged", func() {
		key := newKey(ns)
		key.Spec.TTL = &metav1.Duration{Duration: time.Hour}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		tok, before := expectOneLiveToken(key)
		seenTokens.add(tok)

		forged := forgeStatus(key)
		got := waitCondition(key, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonStatusForged)
		Expect(condition(got, apikeysv1alpha1.ConditionStalled).Message).To(ContainSubstring("never issued for this key"))
		expectNoRecord(forged)

		records := recordsOf(key)
		Expect(records).To(HaveLen(1))
		Expect(records[0].Name).To(Equal(before.Name))
		Expect(records[0].Spec.ExpiresAt).To(Equal(before.Spec.ExpiresAt), "the forged issuedAt moved the expiry")
		Eventually(func(g Gomega) {
			st := fetch(key).Status
			g.Expect(st.RecordName).To(Equal(before.Name), "status is rewritten from the record")
			g.Expect(st.IssuedAt.Equal(&before.Spec.IssuedAt)).To(BeTrue())
		}, timeout, interval).Should(Succeed())

		By("staying Stalled until the spec changes")
		Consistently(func() string { return condition(fetch(key), apikeysv1alpha1.ConditionStalled).Reason }, time.Second, 100*time.Millisecond).
			Should(Equal(apikeysv1alpha1.ReasonStatusForged))
		patch := client.MergeFrom(fetch(key))
		edited := fetch(key)
		edited.Spec.Description = "checked after a forged status"
		Expect(k8sClient.Patch(ctx, edited, patch)).To(Succeed())
		waitReady(key)
		Expect(recordsOf(key)[0].Name).To(Equal(before.Name), "clearing the report minted nothing")
	})

	It("lists no records for a touch of a key whose Secret name is taken, nor for a status naming a record that is not there", func() {
		// Such a list reads every record in the cluster (200 ms at 100k):
		// one per write a tenant makes would be the tenant's to spend.
		var lists atomic.Int32
		r := newCrashReconciler(newCrash(-1))
		direct := r.Client.(client.WithWatch)
		r.APIReader = interceptor.NewClient(direct, interceptor.Funcs{
			List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				lists.Add(1)
				return cl.List(ctx, list, opts...)
			},
		})

		By("a key whose Secret name someone else's Secret holds, touched")
		taken := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace, Name: "taken-" + rand.String(6)}}
		Expect(k8sClient.Create(ctx, taken)).To(Succeed())
		blocked := unwatchedKey("blocked-")
		blocked.Spec.Secret.Name = taken.Name
		Expect(k8sClient.Create(ctx, blocked)).To(Succeed())
		reconcileOnce(r, blocked)
		Expect(condition(fetch(blocked), apikeysv1alpha1.ConditionStalled)).To(HaveField("Reason", apikeysv1alpha1.ReasonSecretNameTaken))
		Expect(lists.Load()).To(BeZero(), "records listed for a Secret that is not the key's")

		By("an issued key whose status names a record that does not exist")
		key := unwatchedKey("forged-")
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		forgeStatus(key)
		lists.Store(0)
		reconcileOnce(r, key)
		Expect(condition(fetch(key), apikeysv1alpha1.ConditionStalled)).To(HaveField("Reason", apikeysv1alpha1.ReasonStatusForged))
		Expect(lists.Load()).To(BeZero(), "records listed for a record name status made up")
	})

	It("never obeys a forged status.recordName on a key not yet issued", func() {
		// Status is forged as soon as the key exists: the controller either
		// sees the forgery before it mints (and mints nothing) or after (and
		// its status patch, locked on the version it read, fails): both end
		// Stalled, and never with a record for the forged hash.
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		forged := forgeStatus(key)
		Eventually(func(g Gomega) {
			got := fetch(key)
			c := condition(got, apikeysv1alpha1.ConditionStalled)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(apikeysv1alpha1.ReasonStatusForged))
		}, timeout, interval).Should(Succeed())
		expectNoRecord(forged)
		for _, rec := range recordsOf(key) {
			Expect(rec.Name).NotTo(Equal(forged))
		}
	})

	It("carries spec edits to the record even when status reports a forgery", func() {
		// In the crash specs' namespace, which the manager does not watch,
		// so that a reconciler run by hand sees the planted condition.
		key := newCrashKey()
		patch := client.MergeFrom(key.DeepCopy())
		key.Spec.Scopes = []string{"orders:read", "orders:write"}
		Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())
		restartAndConverge(key)

		By("planting a StatusForged stall for the generation the next edit will have")
		cur := fetch(key)
		planted := cur.DeepCopy()
		meta.SetStatusCondition(&planted.Status.Conditions, metav1.Condition{
			Type: apikeysv1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: apikeysv1alpha1.ReasonStatusForged,
			Message: "planted", ObservedGeneration: cur.Generation + 1,
		})
		Expect(k8sClient.Status().Patch(ctx, planted, client.MergeFrom(cur))).To(Succeed())
		narrowed := fetch(key)
		patch = client.MergeFrom(narrowed.DeepCopy())
		narrowed.Spec.Scopes = []string{"orders:read"}
		Expect(k8sClient.Patch(ctx, narrowed, patch)).To(Succeed())

		r := newCrashReconciler(newCrash(-1))
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
		Expect(err).NotTo(HaveOccurred())
		Expect(condition(fetch(key), apikeysv1alpha1.ConditionStalled)).
			To(HaveField("Reason", apikeysv1alpha1.ReasonStatusForged), "the report stays")
		Expect(recordsOf(key)[0].Spec.Scopes).To(Equal([]string{"orders:read"}), "a status writer kept a scope the owner removed")
	})

	It("deletes the records of a key whose finalizer was stripped before it was deleted", func() {
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		tok, _ := expectOneLiveToken(key)
		seenTokens.add(tok)

		stripped := fetch(key)
		patch := client.MergeFrom(stripped.DeepCopy())
		stripped.Finalizers = nil
		Expect(k8sClient.Patch(ctx, stripped, patch)).To(Succeed())
		Expect(k8sClient.Delete(ctx, stripped)).To(Succeed())
		Eventually(func() []apikeysv1alpha1.ApiKeyRecord { return recordsOf(key) }, 10*time.Second, interval).
			Should(BeEmpty(), "the record of a deleted key outlived it")
	})
})

// installOwnerRule installs the owner policy and its binding as testPolicy
// expects them (after alter, if given) and removes them when the spec ends
// (testenv.InstallOwnerRule).
func installOwnerRule(alter func(*policy.OwnerRule)) {
	GinkgoHelper()
	remove, err := testenv.InstallOwnerRule(ctx, k8sClient, testPolicy, alter)
	if remove != nil {
		DeferCleanup(remove)
	}
	Expect(err).NotTo(HaveOccurred())
}

// touch changes key's annotations so that the controller looks at it again.
func touch(key *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	cur := fetch(key)
	patch := client.MergeFrom(cur.DeepCopy())
	if cur.Annotations == nil {
		cur.Annotations = map[string]string{}
	}
	cur.Annotations["test.apikeys.dev/touched"] = time.Now().Format(time.RFC3339Nano)
	Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
}
