package controller

import (
	"context"
	"errors"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

var _ = Describe("Rotating a key", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("replaces the token in the same Secret at once when there is no grace period", func() {
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		oldTok, oldRec := expectOneLiveToken(key)
		_, oldSecret := readToken(key)

		key = requestRotation(key, "first")
		newTok, newRec := expectOneLiveToken(key)
		Expect(newTok).NotTo(Equal(oldTok))
		Expect(newRec.Name).NotTo(Equal(oldRec.Name), "the old token's record goes at once")
		Expect(newRec.Spec.Issuance).To(Equal(oldRec.Spec.Issuance + 1))
		Expect(key.Status.PreviousKeys).To(BeEmpty())

		_, secret := readToken(key)
		Expect(secret.UID).To(Equal(oldSecret.UID), "the same Secret object, so kubelet refreshes the pods that mount it")
		Expect(secret.Annotations).To(HaveKeyWithValue(apikeysv1alpha1.TokenHintAnnotation, token.Hint(newTok)))
		Expect(secret.Annotations).To(HaveKeyWithValue(apikeysv1alpha1.IssuedAtAnnotation, newRec.Spec.IssuedAt.UTC().Format(time.RFC3339)))
		expectEvent(key, corev1.EventTypeNormal, apikeysv1alpha1.ReasonRotated, "refused from now on")
	})

	It("keeps the old token working for the grace period, and never more than two", func() {
		key := newKey(ns)
		key.Spec.Rotation = &apikeysv1alpha1.Rotation{GracePeriod: &metav1.Duration{Duration: time.Hour}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		firstTok, _ := expectOneLiveToken(key)

		key = requestRotation(key, "first")
		secondTok, live := expectLiveToken(key)
		records := recordsOf(key)
		Expect(records).To(HaveLen(2))
		prev := otherRecord(records, live.Name)
		Expect(prev.Spec.TokenHash).To(Equal(token.Hash(firstTok)))
		Expect(prev.Spec.ValidUntil).To(HaveValue(HaveField("Time", BeTemporally("==", live.Spec.IssuedAt.Add(time.Hour+time.Second)))),
			"never less than the grace period: the rotation time is truncated to the second, so the end is rounded up")
		Expect(key.Status.PreviousKeys).To(Equal([]apikeysv1alpha1.PreviousKey{
			{TokenHint: token.Hint(firstTok), ValidUntil: *prev.Spec.ValidUntil}}))
		Expect(condition(key, apikeysv1alpha1.ConditionReady).Message).
			To(ContainSubstring("previous token " + token.Hint(firstTok) + " is accepted until"))
		Expect(condition(key, apikeysv1alpha1.ConditionReconciling)).To(BeNil(), "a rotating key is not in progress")
		Expect(condition(key, apikeysv1alpha1.ConditionStalled)).To(BeNil(), "a rotating key is not stalled")

		By("suspending old and new alike, and resuming both")
		edit(key, func(k *apikeysv1alpha1.ApiKey) { k.Spec.Suspended = true })
		waitCondition(key, apikeysv1alpha1.ConditionSuspended, metav1.ConditionTrue, apikeysv1alpha1.ReasonSuspended)
		Expect(recordsOf(key)).To(HaveEach(HaveField("Spec.Suspended", true)))
		edit(key, func(k *apikeysv1alpha1.ApiKey) { k.Spec.Suspended = false })
		key = waitReady(key)
		Expect(recordsOf(key)).To(HaveEach(HaveField("Spec.Suspended", false)))

		By("ending the first token's grace period early when a second rotation comes")
		key = requestRotation(key, "second")
		_, live = expectLiveToken(key)
		records = recordsOf(key)
		Expect(records).To(HaveLen(2), "never more than two live tokens")
		Expect(otherRecord(records, live.Name).Spec.TokenHash).To(Equal(token.Hash(secondTok)))
		for _, rec := range records {
			Expect(rec.Spec.TokenHash).NotTo(Equal(token.Hash(firstTok)))
		}
	})

	It("delivers a rotated token into a new Secret when the old one was deleted", func() {
		key, _ := issuedWithSecretGone(ns)
		key = requestRotation(key, "after-loss")
		Expect(key.Status.SecretDeletedAt).To(BeNil(), "status still says the Secret is gone")
		_, again := expectOneLiveToken(key)
		Expect(again.Spec.Issuance).To(Equal(int64(2)))
		Expect(condition(key, apikeysv1alpha1.ConditionReady).Message).NotTo(ContainSubstring("was deleted"))
	})

	It("keeps spec edits reaching the records while a Secret it does not own blocks a rotation", func() {
		key := newKey(ns)
		key.Spec.Scopes = []string{"links:read", "links:write"}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, secret := readToken(key)

		By("someone who may write Secrets puts one of their own in its place, and a rotation is asked for")
		Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secret.Name},
			StringData: map[string]string{"password": "hunter2"}})).To(Succeed())
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "blocked"}
		})
		waitCondition(key, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonSecretNameTaken)

		By("the owner narrows the scopes of the token that may have leaked")
		edit(key, func(k *apikeysv1alpha1.ApiKey) { k.Spec.Scopes = []string{"links:read"} })
		Eventually(func(g Gomega) {
			records := recordsOf(key)
			g.Expect(records).To(HaveLen(1), "the blocked rotation minted nothing")
			g.Expect(records[0].Spec.Scopes).To(Equal([]string{"links:read"}))
		}, timeout, interval).Should(Succeed())
	})

	It("tries once when kube-apiserver refuses the rotated token's Secret, instead of minting again and again", func() {
		watcher, err := client.NewWithWatch(testEnv.Config, client.Options{Scheme: testenv.Scheme})
		Expect(err).NotTo(HaveOccurred())
		pad := strings.Repeat("x", 150_000)
		key := newKey(ns)
		key.Spec.Secret.Annotations = map[string]string{"example.com/pad1": pad}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, live := expectOneLiveToken(key)

		By("the spec's Secret annotations change, so the Secret's and the new ones no longer fit in one object")
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.Secret.Annotations = map[string]string{"example.com/pad2": pad}
		})
		records, err := watcher.Watch(ctx, &apikeysv1alpha1.ApiKeyRecordList{},
			client.MatchingLabels{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)})
		Expect(err).NotTo(HaveOccurred())
		defer records.Stop()

		By("a rotation is asked for: it stalls, saying why, and mints no more")
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "too-big"}
		})
		got := waitCondition(key, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonInvalidSpec)
		Expect(condition(got, apikeysv1alpha1.ConditionStalled).Message).To(ContainSubstring("the rotated token's Secret was refused"))
		// Each pass of the key may try once (one a conflict retried, say);
		// none may bring on the next, which would mint as fast as the client may write.
		minted := 0
		count := func() int {
			for {
				select {
				case ev := <-records.ResultChan():
					if rec, ok := ev.Object.(*apikeysv1alpha1.ApiKeyRecord); ok && ev.Type == watch.Added && rec.Name != live.Name {
						minted++
					}
				default:
					return minted
				}
			}
		}
		Eventually(count, timeout, interval).Should(BeNumerically(">=", 1), "the rotation never tried")
		Consistently(count, 3*time.Second, 100*time.Millisecond).Should(BeNumerically("<=", 3), "a token is minted for each retry")
		Expect(recordsOf(got)).To(HaveExactElements(HaveField("Name", live.Name)), "the undelivered token's record is still there")
	})

	It("keeps spec edits reaching the records while kube-apiserver refuses the rotated token's Secret for a while", func() {
		key := newKey(ns)
		key.Spec.Scopes = []string{"links:read", "links:write"}
		key.Spec.TTL = &metav1.Duration{Duration: time.Hour}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, live := expectOneLiveToken(key)
		_, secret := readToken(key)
		// A refused token issued a second later would expire a second later.
		Eventually(func() time.Duration { return time.Since(live.Spec.IssuedAt.Time) }, timeout, interval).
			Should(BeNumerically(">", 2*time.Second))

		By("the Secret is gone, and the namespace's Secret quota is used up (set as the quota controller, absent here, would)")
		Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
		full := corev1.ResourceList{corev1.ResourceSecrets: resource.MustParse("1")}
		quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "secrets"},
			Spec: corev1.ResourceQuotaSpec{Hard: full}}
		Expect(k8sClient.Create(ctx, quota)).To(Succeed())
		quota.Status = corev1.ResourceQuotaStatus{Hard: full, Used: full}
		Expect(k8sClient.Status().Update(ctx, quota)).To(Succeed())
		Eventually(func() error {
			return k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}}, client.DryRunAll)
		}, timeout, interval).Should(Satisfy(apierrors.IsForbidden), "the quota does not refuse Secrets")

		By("a rotation is asked for and refused, retried with backoff; meanwhile the owner narrows the scopes")
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "over-quota"}
		})
		edit(key, func(k *apikeysv1alpha1.ApiKey) { k.Spec.Scopes = []string{"links:read"} })
		Eventually(func(g Gomega) {
			records := recordsOf(key)
			g.Expect(records).To(HaveLen(1))
			g.Expect(records[0].Name).To(Equal(live.Name), "a token was delivered past the quota")
			g.Expect(records[0].Spec.Scopes).To(Equal([]string{"links:read"}))
		}, timeout, interval).Should(Succeed())
		Consistently(func() *metav1.Time { return fetch(key).Status.ExpiresAt }, 2*time.Second, 50*time.Millisecond).
			Should(Equal(live.Spec.ExpiresAt), "status reports a refused token's expiry")
	})

	It("never writes a rotated token into a Secret recreated by someone else, whatever owner references it forges", func() {
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, live := expectOneLiveToken(key)
		_, secret := readToken(key)

		By("the owner deletes the Secret; someone who may create Secrets makes one naming the key as its controller")
		Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
		forged := secretClaiming(key, secret.Name)
		forged.Labels = map[string]string{"mirror.example.com/to": "mallory"}
		Expect(k8sClient.Create(ctx, forged)).To(Succeed())

		By("a rotation is asked for, and waits")
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "into-the-forgery"}
		})
		stalled := waitCondition(key, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonSecretNameTaken)
		Expect(condition(stalled, apikeysv1alpha1.ConditionStalled).Message).
			To(ContainSubstring("not the one this ApiKey's token was delivered to"))
		got := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(forged), got)).To(Succeed())
		// Checked key by key: a failure must not print the Secret's data.
		_, written := got.Data[apikeysv1alpha1.SecretTokenKey]
		Expect(written).To(BeFalse(), "a token was written into a Secret the operator did not create")
		records := recordsOf(key)
		Expect(records).To(HaveLen(1), "the refused rotation minted a token")
		Expect(records[0].Name).To(Equal(live.Name))

		By("once the forgery is gone and the key edited (docs/apikey.md), the rotation delivers into a Secret of its own")
		Expect(k8sClient.Delete(ctx, got)).To(Succeed())
		edit(key, func(k *apikeysv1alpha1.ApiKey) { k.Spec.Description = "retry" })
		Eventually(func(g Gomega) {
			got := fetch(key)
			g.Expect(got.Status.LastRotateRequest).To(Equal("into-the-forgery"))
			records := recordsOf(got)
			g.Expect(records).To(HaveLen(1))
			g.Expect(records[0].Name).NotTo(Equal(live.Name))
		}, timeout, interval).Should(Succeed())
		_, rotated := expectOneLiveToken(waitReady(key))
		Expect(rotated.Spec.SecretUID).NotTo(Equal(string(forged.UID)))
	})

	It("never writes a rotated token into a Secret that appears while the rotation records it, the key's own being gone", func() {
		var forged *corev1.Secret
		// The key's Secret is gone when the rotation looks; between the new
		// record and the delivery, someone makes one naming the key as its
		// controller.
		r := meddlingAtRecord(func() {
			if forged != nil && forged.UID == "" {
				Expect(k8sClient.Create(ctx, forged)).To(Succeed())
			}
		})
		key := unwatchedKey("appears-")
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		_, first := expectOneLiveToken(fetch(key))
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: first.Spec.SecretName}})).
			To(Succeed())

		forged = secretClaiming(fetch(key), first.Spec.SecretName)
		rotateOnce(r, key, "appears")
		Expect(forged.UID).NotTo(BeEmpty(), "the Secret did not appear")
		expectNoTokenIn(forged)
		records := recordsOf(fetch(key))
		Expect(records).To(HaveLen(1), "the undelivered token's record outlived the pass")
		Expect(records[0].Name).To(Equal(first.Name))
	})

	It("reports the live token's expiry while a rotation whose delivery timed out waits to be settled", func() {
		r := newCrashReconciler(newCrash(-1))
		r.Client = interceptor.NewClient(r.Client.(client.WithWatch), interceptor.Funcs{
			Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				if m, ok := obj.(*metav1.PartialObjectMetadata); ok && m.Kind == "Secret" {
					return apierrors.NewTimeoutError("the Secret's patch timed out", 1)
				}
				return cl.Patch(ctx, obj, patch, opts...)
			},
		})
		key := unwatchedKey("timeout-")
		key.Spec.TTL = &metav1.Duration{Duration: time.Hour}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		_, live := expectOneLiveToken(fetch(key))
		// A token issued a second later would expire a second later.
		Eventually(func() time.Duration { return time.Since(live.Spec.IssuedAt.Time) }, timeout, interval).
			Should(BeNumerically(">", 2*time.Second))

		rotateOnce(r, key, "times-out")
		got := fetch(key)
		Expect(recordsOf(got)).To(HaveLen(2), "the new token's record waits for the next pass to settle it")
		Expect(got.Status.TokenHint).To(Equal(live.Spec.TokenHint))
		Expect(got.Status.ExpiresAt).NotTo(BeNil())
		Expect(got.Status.ExpiresAt.Time).To(BeTemporally("==", live.Spec.ExpiresAt.Time),
			"status pairs the live token's hint with another token's expiry")
	})

	It("keeps spec edits reaching the live token's record while every write of the rotated token's Secret fails", func() {
		// A 500 (an admission webhook on Secrets that is down) may hide a
		// write that happened, so the new record waits for the next pass
		// to settle it; meanwhile nothing may freeze what the spec says of
		// the live token.
		r := newCrashReconciler(newCrash(-1))
		r.Client = interceptor.NewClient(r.Client.(client.WithWatch), interceptor.Funcs{
			Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				if m, ok := obj.(*metav1.PartialObjectMetadata); ok && m.Kind == "Secret" {
					return apierrors.NewInternalError(errors.New("failed calling webhook \"secrets.example.com\""))
				}
				return cl.Patch(ctx, obj, patch, opts...)
			},
		})
		key := unwatchedKey("failing-")
		key.Spec.Scopes = []string{"links:read", "links:write"}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		_, live := expectOneLiveToken(fetch(key))

		rotateOnce(r, key, "fails")
		edit(key, func(k *apikeysv1alpha1.ApiKey) { k.Spec.Scopes = []string{"links:read"} })
		for range 2 {
			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
			Expect(err).To(HaveOccurred(), "the Secret's write failed, yet the pass says it went through")
		}
		Expect(findRecord(recordsOf(key), live.Name)).To(HaveField("Spec.Scopes", Equal([]string{"links:read"})),
			"the narrowed scopes never reached the live token's record")
	})

	It("pins the Secret of a token delivered before records kept it, and refuses one made since in its place", func() {
		r := newCrashReconciler(newCrash(-1))
		r.unpinnedSlack = time.Second
		unpin := func(key *apikeysv1alpha1.ApiKey) {
			GinkgoHelper()
			rec := recordsOf(fetch(key))[0]
			patch := `{"spec":{"secretUID":null}}`
			Expect(k8sClient.Patch(ctx, &rec, client.RawPatch(types.MergePatchType, []byte(patch)))).To(Succeed())
		}

		By("a token of an older release, whose Secret is still there: the next pass pins it")
		kept := unwatchedKey("legacy-")
		Expect(k8sClient.Create(ctx, kept)).To(Succeed())
		reconcileOnce(r, kept)
		unpin(kept)
		reconcileOnce(r, kept)
		expectOneLiveToken(fetch(kept))

		By("a token of an older release whose Secret was deleted, then made again by someone else, later than the slack allows")
		key := unwatchedKey("legacy-")
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		_, first := expectOneLiveToken(fetch(key))
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: first.Spec.SecretName}})).
			To(Succeed())
		unpin(key)
		Eventually(func() time.Duration { return time.Since(first.CreationTimestamp.Time) }, timeout, interval).
			Should(BeNumerically(">", 2*time.Second), "creation times have whole seconds")
		forged := secretClaiming(fetch(key), first.Spec.SecretName)
		Expect(k8sClient.Create(ctx, forged)).To(Succeed())
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "legacy"}
		})
		reconcileOnce(r, key)
		Expect(condition(fetch(key), apikeysv1alpha1.ConditionStalled)).To(HaveField("Reason", apikeysv1alpha1.ReasonSecretNameTaken))
		got := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(forged), got)).To(Succeed())
		_, written := got.Data[apikeysv1alpha1.SecretTokenKey] // key by key: a failure must not print the data
		Expect(written).To(BeFalse(), "a token was written into a Secret made after the live token")
		Expect(recordsOf(fetch(key))).To(HaveExactElements(HaveField("Name", first.Name)))
	})

	It("never writes a rotated token into a Secret someone else put in its place mid-rotation", func() {
		var foreign *corev1.Secret
		// Between the ownership check and the delivery (when the new record
		// is created), the Secret is swapped for one its owner did not make.
		r := meddlingAtRecord(func() {
			if foreign != nil && foreign.UID == "" {
				Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
					Namespace: foreign.Namespace, Name: foreign.Name}})).To(Succeed())
				Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
			}
		})
		key := unwatchedKey("swapped-")
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		_, first := expectOneLiveToken(fetch(key))

		foreign = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: first.Spec.SecretName},
			StringData: map[string]string{"password": "hunter2"}}
		rotateOnce(r, key, "swapped")
		Expect(foreign.UID).NotTo(BeEmpty(), "the swap did not happen")
		expectNoTokenIn(foreign)

		By("undoing the rotation, so the token that was never delivered never works")
		_, _ = r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
		records := recordsOf(fetch(key))
		Expect(records).To(HaveLen(1), "the undelivered token's record is still there")
		Expect(records[0].Name).To(Equal(first.Name))
	})

	It("does nothing when the annotation keeps its value", func() {
		key := newKey(ns)
		key.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "at-creation"}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)
		Expect(key.Status.LastRotateRequest).To(Equal("at-creation"), "a key created with the annotation is issued, not rotated")

		By("running a pass with the same value")
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.Description = "a pass with the same rotate value"
			k.Annotations["example.com/unrelated"] = "changed"
		})
		key = waitReady(key)
		_, again := expectOneLiveToken(key)
		Expect(again.Name).To(Equal(rec.Name))

		By("rotating once for a new value, and not again for it")
		key = requestRotation(key, "next")
		_, rotated := expectOneLiveToken(key)
		Expect(rotated.Name).NotTo(Equal(rec.Name))
		edit(key, func(k *apikeysv1alpha1.ApiKey) { k.Spec.Description = "another pass" })
		key = waitReady(key)
		_, still := expectOneLiveToken(key)
		Expect(still.Name).To(Equal(rotated.Name))
	})

	It("rotates a suspended key, which stays suspended", func() {
		key := newKey(ns)
		key.Spec.Suspended = true
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitCondition(key, apikeysv1alpha1.ConditionSuspended, metav1.ConditionTrue, apikeysv1alpha1.ReasonSuspended)
		_, rec := expectOneLiveToken(key)

		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "leaked"}
		})
		Eventually(func(g Gomega) {
			got := fetch(key)
			g.Expect(got.Status.LastRotateRequest).To(Equal("leaked"))
			// With no grace period the old record ends at the rotation and
			// goes in the pass after the one that wrote this status.
			g.Expect(recordsOf(got)).To(HaveLen(1), "the rotated-out record is still there")
		}, timeout, interval).Should(Succeed())
		key = fetch(key)
		_, rotated := expectOneLiveToken(key)
		Expect(rotated.Name).NotTo(Equal(rec.Name))
		Expect(rotated.Spec.Suspended).To(BeTrue())
		Expect(condition(key, apikeysv1alpha1.ConditionReady).Reason).To(Equal(apikeysv1alpha1.ReasonSuspended))
	})

	It("leaves no record behind when the key is deleted during a rotation", func() {
		key := newKey(ns)
		key.Spec.Rotation = &apikeysv1alpha1.Rotation{GracePeriod: &metav1.Duration{Duration: time.Hour}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		for _, value := range []string{"a", "b", "c"} {
			edit(key, func(k *apikeysv1alpha1.ApiKey) {
				k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: value}
			})
		}
		Expect(k8sClient.Delete(ctx, key)).To(Succeed())
		Eventually(func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(key), &apikeysv1alpha1.ApiKey{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
			g.Expect(recordsOf(key)).To(BeEmpty())
		}, timeout, interval).Should(Succeed())
	})
})

var _ = Describe("Rotating on a schedule and warning before expiry", func() {
	It("rotates every interval after issuance, restarts ttl, and ends the grace period on time", func() {
		r, clock := pinnedReconciler()
		key := unwatchedKey("scheduled-")
		key.Spec.TTL = &metav1.Duration{Duration: 48 * time.Hour}
		key.Spec.Rotation = &apikeysv1alpha1.Rotation{
			Every:       &metav1.Duration{Duration: 24 * time.Hour},
			GracePeriod: &metav1.Duration{Duration: 10 * time.Minute},
		}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())

		res := reconcileOnce(r, key)
		key = fetch(key)
		firstTok, first := expectOneLiveToken(key)
		Expect(res.RequeueAfter).To(BeNumerically("~", 24*time.Hour, time.Second), "a timer for the rotation, no polling")

		By("rotating 24h after issuance")
		*clock = clock.Add(24 * time.Hour)
		res = reconcileOnce(r, key)
		key = fetch(key)
		_, live := expectLiveToken(key)
		Expect(live.Name).NotTo(Equal(first.Name))
		Expect(key.Status.IssuedAt.Time).To(BeTemporally("==", *clock))
		Expect(key.Status.ExpiresAt.Time).To(BeTemporally("==", clock.Add(48*time.Hour)), "ttl restarts from the new issuance")
		Expect(key.Status.PreviousKeys).To(ConsistOf(HaveField("TokenHint", token.Hint(firstTok))))
		Expect(res.RequeueAfter).To(BeNumerically("~", 10*time.Minute+time.Second, time.Second), "a timer for the grace end")

		By("keeping the old record until the grace end, then deleting it")
		*clock = clock.Add(10 * time.Minute)
		reconcileOnce(r, key)
		Expect(fetch(key).Status.PreviousKeys).To(HaveLen(1))
		*clock = clock.Add(time.Second)
		reconcileOnce(r, key)
		key = fetch(key)
		expectOneLiveToken(key)
		Expect(key.Status.PreviousKeys).To(BeEmpty())
		expectNoTokenInEvents(r.Recorder.(*events.FakeRecorder))
	})

	It("takes the request in force on a token issued before rotation existed as answered", func() {
		r := newCrashReconciler(newCrash(-1))
		key := unwatchedKey("legacy-")
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		key = fetch(key)
		_, rec := expectOneLiveToken(key)

		By("making the record look as an earlier operator wrote it, and the key carry an old request")
		Expect(k8sClient.Patch(ctx, &rec, client.RawPatch(types.MergePatchType,
			[]byte(`{"spec":{"issuance":null,"rotateRequest":null}}`)))).To(Succeed())
		patch := client.MergeFrom(key.DeepCopy())
		key.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "asked-before-rotation-existed"}
		Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())

		reconcileOnce(r, key)
		key = fetch(key)
		_, adopted := expectOneLiveToken(key)
		Expect(adopted.Name).To(Equal(rec.Name), "an upgrade must not rotate")
		Expect(adopted.Spec.Issuance).To(Equal(int64(1)))
		Expect(adopted.Spec.RotateRequest).To(Equal("asked-before-rotation-existed"))

		patch = client.MergeFrom(key.DeepCopy())
		key.Annotations[apikeysv1alpha1.RotateAnnotation] = "asked-after"
		Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())
		reconcileOnce(r, key)
		_, rotated := expectOneLiveToken(fetch(key))
		Expect(rotated.Name).NotTo(Equal(rec.Name))
		Expect(rotated.Spec.Issuance).To(Equal(int64(2)))
	})

	It("never extends an absolute expiresAt", func() {
		r, clock := pinnedReconciler()
		key := unwatchedKey("absolute-")
		expiresAt := clock.Add(72 * time.Hour)
		key.Spec.ExpiresAt = &metav1.Time{Time: expiresAt}
		key.Spec.Rotation = &apikeysv1alpha1.Rotation{Every: &metav1.Duration{Duration: 24 * time.Hour}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)

		*clock = clock.Add(24 * time.Hour)
		reconcileOnce(r, key)
		key = fetch(key)
		_, rec := expectOneLiveToken(key)
		Expect(rec.Spec.Issuance).To(Equal(int64(2)))
		Expect(key.Status.ExpiresAt.Time).To(BeTemporally("==", expiresAt))
		Expect(rec.Spec.ExpiresAt.Time).To(BeTemporally("==", expiresAt))
	})

	It("never lets a superseded token outlive --max-ttl from its own issuance, whatever expiresAt becomes", func() {
		r, clock := pinnedReconciler()
		issued := *clock
		key := unwatchedKey("stretch-")
		key.Spec.ExpiresAt = &metav1.Time{Time: issued.Add(testMaxTTL - time.Hour)}
		key.Spec.Rotation = &apikeysv1alpha1.Rotation{GracePeriod: &metav1.Duration{Duration: 10 * testMaxTTL}}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		firstTok, _ := expectOneLiveToken(fetch(key))

		By("rotating just before expiry, with a grace period longer than --max-ttl")
		*clock = clock.Add(testMaxTTL - 2*time.Hour)
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "late"}
		})
		reconcileOnce(r, key)

		By("then moving expiresAt as far as the new token's issuance allows")
		edit(key, func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.ExpiresAt = &metav1.Time{Time: clock.Add(testMaxTTL - time.Hour)}
		})
		reconcileOnce(r, key)
		key = fetch(key)
		Expect(condition(key, apikeysv1alpha1.ConditionStalled)).To(BeNil(), "the new expiry is within --max-ttl of the live token")
		_, live := expectLiveToken(key)
		Expect(live.Spec.ExpiresAt.Time).To(BeTemporally("==", clock.Add(testMaxTTL-time.Hour)))
		prev := otherRecord(recordsOf(key), live.Name)
		Expect(prev.Spec.TokenHash).To(Equal(token.Hash(firstTok)))
		Expect(prev.Spec.ExpiresAt).NotTo(BeNil())
		Expect(prev.Spec.ExpiresAt.Time).To(BeTemporally("<=", issued.Add(testMaxTTL)),
			"the first token would live %s", prev.Spec.ExpiresAt.Sub(issued))
	})

	It("warns once, within a tenth of the lifetime", func() {
		r, clock := pinnedReconciler()
		key := unwatchedKey("expiring-")
		key.Spec.TTL = &metav1.Duration{Duration: 10 * time.Hour}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())

		res := reconcileOnce(r, key)
		key = fetch(key)
		Expect(condition(key, apikeysv1alpha1.ConditionExpiringSoon)).To(BeNil())
		Expect(res.RequeueAfter).To(BeNumerically("~", 9*time.Hour, time.Second), "a timer for the warning")

		*clock = clock.Add(9 * time.Hour)
		reconcileOnce(r, key)
		reconcileOnce(r, key)
		key = fetch(key)
		c := condition(key, apikeysv1alpha1.ConditionExpiringSoon)
		Expect(c).NotTo(BeNil())
		Expect(c.Status).To(Equal(metav1.ConditionTrue))
		Expect(c.Message).To(ContainSubstring("rotate it"))
		Expect(condition(key, apikeysv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
		Expect(drainEvents(r)).To(HaveExactElements(
			ContainSubstring("Warning ExpiringSoon")), "one warning, however many passes, and no event for the issuance")

		By("clearing the warning when a rotation brings a new lifetime")
		key.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "renew"}
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		reconcileOnce(r, key)
		key = fetch(key)
		Expect(condition(key, apikeysv1alpha1.ConditionExpiringSoon)).To(BeNil())
		Expect(key.Status.ExpiresAt.Time).To(BeTemporally("==", clock.Add(10*time.Hour)))
	})

})

// pinnedReconciler is an operator whose clock moves only when the spec
// moves it, through the returned pointer.
func pinnedReconciler() (*ApiKeyReconciler, *time.Time) {
	clock := time.Now().Truncate(time.Second)
	r := newCrashReconciler(newCrash(-1))
	r.Now = func() time.Time { return clock }
	return r, &clock
}

// unwatchedKey is a key in the namespace the suite's manager does not see,
// for specs that run the reconciler themselves.
func unwatchedKey(prefix string) *apikeysv1alpha1.ApiKey {
	return &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace, Name: prefix + rand.String(6)}}
}

// edit changes key as a user would, retrying when the operator's writes
// got in first.
func edit(key *apikeysv1alpha1.ApiKey, change func(*apikeysv1alpha1.ApiKey)) {
	GinkgoHelper()
	Eventually(func() error {
		cur := fetch(key)
		change(cur)
		return k8sClient.Update(ctx, cur)
	}, timeout, interval).Should(Succeed())
}

// requestRotation sets the rotate annotation to value and waits until the
// key reports having acted on it.
func requestRotation(key *apikeysv1alpha1.ApiKey, value string) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	key = fetch(key)
	patch := client.MergeFrom(key.DeepCopy())
	if key.Annotations == nil {
		key.Annotations = map[string]string{}
	}
	key.Annotations[apikeysv1alpha1.RotateAnnotation] = value
	Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())
	Eventually(func(g Gomega) {
		got := fetch(key)
		g.Expect(got.Status.LastRotateRequest).To(Equal(value))
		g.Expect(condition(got, apikeysv1alpha1.ConditionReady)).To(HaveField("Status", metav1.ConditionTrue))
		for _, rec := range recordsOf(got) {
			if rec.Name != got.Status.RecordName {
				g.Expect(rec.Spec.ValidUntil).NotTo(BeNil())
				g.Expect(time.Now().Before(rec.Spec.ValidUntil.Time)).To(BeTrue(), "a token past its grace period is still recorded")
			}
		}
	}, timeout, interval).Should(Succeed())
	return fetch(key)
}

// expectLiveToken checks that the Secret's token is the key's one live
// token (the record without validUntil) and that at most one other record,
// in its grace period, lives beside it.
func expectLiveToken(key *apikeysv1alpha1.ApiKey) (string, apikeysv1alpha1.ApiKeyRecord) {
	GinkgoHelper()
	tok, secret := readToken(key)
	Expect(metav1.IsControlledBy(secret, key)).To(BeTrue())
	records := recordsOf(key)
	Expect(len(records)).To(BeNumerically("<=", 2), "never more than two live tokens")
	var live []apikeysv1alpha1.ApiKeyRecord
	for _, rec := range records {
		if rec.Spec.ValidUntil == nil {
			live = append(live, rec)
		}
	}
	Expect(live).To(HaveLen(1), "exactly one record without validUntil")
	Expect(live[0].Name).To(Equal(key.Status.RecordName))
	Expect(live[0].Spec.TokenHash).To(Equal(token.Hash(tok)), "the Secret holds the live token")
	Expect(secret.Annotations[apikeysv1alpha1.TokenHashAnnotation]).To(Equal(live[0].Spec.TokenHash))
	return tok, live[0]
}

func otherRecord(records []apikeysv1alpha1.ApiKeyRecord, name string) apikeysv1alpha1.ApiKeyRecord {
	GinkgoHelper()
	for _, rec := range records {
		if rec.Name != name {
			return rec
		}
	}
	Fail("no record other than " + name)
	return apikeysv1alpha1.ApiKeyRecord{}
}

// expectEvent waits for an event on key of the given type and reason whose
// note contains text.
func expectEvent(key *apikeysv1alpha1.ApiKey, typ, reason, text string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var evs eventsv1.EventList
		g.Expect(k8sClient.List(ctx, &evs, client.InNamespace(key.Namespace))).To(Succeed())
		var notes []string
		for _, ev := range evs.Items {
			if ev.Regarding.UID == key.UID && ev.Type == typ && ev.Reason == reason {
				notes = append(notes, ev.Note)
			}
		}
		g.Expect(strings.Join(notes, "\n")).To(ContainSubstring(text))
	}, timeout, interval).Should(Succeed())
}

// reconcileOnce runs one pass, and the passes it asks for at once (as the
// controller's queue would), and returns the last result.
func reconcileOnce(r *ApiKeyReconciler, key *apikeysv1alpha1.ApiKey) ctrl.Result {
	GinkgoHelper()
	for range 3 {
		res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
		Expect(err).NotTo(HaveOccurred())
		if res.RequeueAfter == 0 || res.RequeueAfter > time.Second {
			return res
		}
	}
	Fail("the key asks for a pass at once, again and again")
	return ctrl.Result{}
}

func drainEvents(r *ApiKeyReconciler) []string {
	rec := r.Recorder.(*events.FakeRecorder)
	var notes []string
	for len(rec.Events) > 0 {
		notes = append(notes, <-rec.Events)
	}
	return notes
}

// meddlingAtRecord is a crash-spec reconciler that calls meddle before each
// record it creates: someone else acting between a rotation's look at the
// Secret and its delivery.
func meddlingAtRecord(meddle func()) *ApiKeyReconciler {
	r := newCrashReconciler(newCrash(-1))
	r.Client = interceptor.NewClient(r.Client.(client.WithWatch), interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*apikeysv1alpha1.ApiKeyRecord); ok {
				meddle()
			}
			return cl.Create(ctx, obj, opts...)
		},
	})
	return r
}

// secretClaiming is a Secret named name, not the operator's, whose owner
// reference names key as its controller, as anyone who may create Secrets
// can write.
func secretClaiming(key *apikeysv1alpha1.ApiKey, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: name,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: apikeysv1alpha1.GroupVersion.String(), Kind: "ApiKey",
				Name: key.Name, UID: key.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		StringData: map[string]string{"password": "hunter2"},
	}
}

// rotateOnce asks for a rotation of key and runs one pass of r, whatever
// that pass returns.
func rotateOnce(r *ApiKeyReconciler, key *apikeysv1alpha1.ApiKey, value string) {
	GinkgoHelper()
	edit(key, func(k *apikeysv1alpha1.ApiKey) {
		k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: value}
	})
	_, _ = r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(key)})
}

// expectNoTokenIn checks that a Secret someone else made is still theirs,
// data and all, and holds no token; key by key, so that a failure never
// prints the Secret's data.
func expectNoTokenIn(theirs *corev1.Secret) {
	GinkgoHelper()
	got := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(theirs), got)).To(Succeed())
	Expect(got.UID).To(Equal(theirs.UID))
	_, written := got.Data[apikeysv1alpha1.SecretTokenKey]
	Expect(written).To(BeFalse(), "a token was written into a Secret the operator did not make")
	Expect(string(got.Data["password"])).To(Equal("hunter2"))
}
