package controller

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

var _ = Describe("Issuing a key", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("mints a token, keeps only its hash in one record and delivers it once to a Secret", func() {
		key := newKey(ns)
		key.Spec.Scopes = []string{"links:create", "links:read"}
		key.Spec.Audiences = []string{"shortener"}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())

		key = waitReady(key)
		_, rec := expectOneLiveToken(key)

		By("recording who the key is and what it may do")
		Expect(key.Status.Username).To(Equal("apikey:" + ns + ":" + key.Name))
		Expect(rec.Spec.Username).To(Equal(key.Status.Username))
		Expect(rec.Spec.Groups).To(Equal([]string{"apikeys", "apikeys:" + ns}))
		Expect(rec.Spec.Scopes).To(Equal(key.Spec.Scopes))
		Expect(rec.Spec.Audiences).To(Equal(key.Spec.Audiences))
		Expect(rec.Spec.ApiKey).To(Equal(apikeysv1alpha1.ApiKeyReference{Namespace: ns, Name: key.Name, UID: string(key.UID)}))

		By("bounding a key without expiry by --max-ttl")
		Expect(key.Status.ExpiresAt).NotTo(BeNil())
		Expect(key.Status.ExpiresAt.Sub(key.Status.IssuedAt.Time)).To(Equal(testMaxTTL))
		Expect(rec.Spec.ExpiresAt.Equal(key.Status.ExpiresAt)).To(BeTrue())

		By("defaulting the Secret's name and annotating it with the token's hint and issuance")
		Expect(key.Status.SecretName).To(Equal(key.Name + "-token"))
		_, secret := readToken(key)
		Expect(secret.Immutable).To(BeNil(), "a rotation rewrites the Secret, and kubelet refreshes only mutable ones")
		Expect(secret.Annotations).To(HaveKeyWithValue(apikeysv1alpha1.TokenHintAnnotation, key.Status.TokenHint))
		Expect(secret.Annotations).To(HaveKeyWithValue(apikeysv1alpha1.IssuedAtAnnotation, key.Status.IssuedAt.UTC().Format(time.RFC3339)))
		Expect(rec.Spec.Issuance).To(Equal(int64(1)))
		Expect(secret.Labels).To(HaveKeyWithValue(apikeysv1alpha1.ManagedByLabel, apikeysv1alpha1.ManagedByValue))
		Expect(key.Finalizers).To(ContainElement(Finalizer))
		Expect(condition(key, apikeysv1alpha1.ConditionReconciling)).To(BeNil())
		Expect(condition(key, apikeysv1alpha1.ConditionStalled)).To(BeNil())
	})

	It("issues many keys created at once, each exactly one token, with several workers", func() {
		keys := make([]*apikeysv1alpha1.ApiKey, 40)
		var wg sync.WaitGroup
		for i := range keys {
			keys[i] = newKey(ns)
			wg.Add(1)
			go func(key *apikeysv1alpha1.ApiKey) {
				defer GinkgoRecover()
				defer wg.Done()
				Expect(k8sClient.Create(ctx, key)).To(Succeed())
			}(keys[i])
		}
		wg.Wait()
		for _, key := range keys {
			expectOneLiveToken(waitReady(key))
		}
	})

	It("issues a key whose username is as long as a namespace and a name can make it", func() {
		// apikey:<63-character namespace>:<253-character name>: 324 characters.
		long := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + strings.Repeat("n", 55) + rand.String(6)}}
		Expect(k8sClient.Create(ctx, long)).To(Succeed())
		label := strings.Repeat("k", 63)
		key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: long.Name,
			Name: label + "." + label + "." + label + "." + strings.Repeat("k", 55) + rand.String(6)}}
		key.Spec.Secret.Name = "long-token"
		Expect(key.Name).To(HaveLen(253))
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)
		Expect(rec.Spec.Username).To(HaveLen(324))
		Expect(key.Status.Username).To(Equal(rec.Spec.Username))
	})

	It("accepts Rushomon's ro_pat prefix", func() {
		key := newKey(ns)
		key.Spec.Prefix = "ro_pat"
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		tok, _ := expectOneLiveToken(key)
		parts, err := token.Parse(tok)
		Expect(err).NotTo(HaveOccurred())
		Expect(parts.Prefix).To(Equal("ro_pat"))
		Expect(key.Status.TokenHint).To(HavePrefix("ro_pat_"))
	})

	It("applies every sample in config/samples and issues each", func() {
		files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).NotTo(BeEmpty())
		var keys []*apikeysv1alpha1.ApiKey
		for _, f := range files {
			if filepath.Base(f) == "kustomization.yaml" {
				continue
			}
			raw, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			obj := &unstructured.Unstructured{}
			Expect(utilyaml.Unmarshal(raw, &obj.Object)).To(Succeed(), f)
			obj.SetNamespace(ns)
			Expect(k8sClient.Create(ctx, obj)).To(Succeed(), f)
			keys = append(keys, &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: obj.GetName()}})
		}
		for _, key := range keys {
			expectOneLiveToken(waitReady(key))
		}
	})
})

var _ = Describe("Rules the API server enforces", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	DescribeTable("rejecting a bad ApiKey with a message the user can act on",
		func(mutate func(*apikeysv1alpha1.ApiKey), message string) {
			key := newKey(ns)
			mutate(key)
			err := k8sClient.Create(ctx, key)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("both expiresAt and ttl", func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.ExpiresAt = &metav1.Time{Time: time.Now().Add(time.Hour)}
			k.Spec.TTL = &metav1.Duration{Duration: time.Hour}
		}, "set at most one of expiresAt and ttl"),
		Entry("a scope with upper case", func(k *apikeysv1alpha1.ApiKey) { k.Spec.Scopes = []string{"Links:Read"} },
			"spec.scopes[0]"),
		Entry("too many scopes", func(k *apikeysv1alpha1.ApiKey) {
			for i := 0; i < 65; i++ {
				k.Spec.Scopes = append(k.Spec.Scopes, "s"+string(rune('a'+i%26))+string(rune('a'+i/26)))
			}
		}, "must have at most 64 items"),
		Entry("a prefix with upper case", func(k *apikeysv1alpha1.ApiKey) { k.Spec.Prefix = "Ak" }, "spec.prefix"),
		Entry("a prefix ending in _", func(k *apikeysv1alpha1.ApiKey) { k.Spec.Prefix = "ak_" }, "spec.prefix"),
		Entry("a one-letter prefix", func(k *apikeysv1alpha1.ApiKey) { k.Spec.Prefix = "a" }, "spec.prefix"),
		Entry("an unknown identity", func(k *apikeysv1alpha1.ApiKey) { k.Spec.Identity = "Robot" }, "spec.identity"),
		Entry("a malformed ttl", func(k *apikeysv1alpha1.ApiKey) { k.Spec.TTL = &metav1.Duration{Duration: -time.Hour} }, "spec.ttl"),
		Entry("a description over 256 characters", func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.Description = string(make([]byte, 257))
		}, "spec.description"),
		Entry("rotation more often than hourly", func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.Rotation = &apikeysv1alpha1.Rotation{Every: &metav1.Duration{Duration: 30 * time.Minute}}
		}, "spec.rotation.every must be at least 1h"),
		Entry("a grace period as long as the rotation interval", func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.Rotation = &apikeysv1alpha1.Rotation{Every: &metav1.Duration{Duration: time.Hour},
				GracePeriod: &metav1.Duration{Duration: time.Hour}}
		}, "gracePeriod must be shorter than spec.rotation.every"),
	)

	DescribeTable("refusing changes to what cannot change",
		func(create, update func(*apikeysv1alpha1.ApiKey), message string) {
			key := newKey(ns)
			create(key)
			Expect(k8sClient.Create(ctx, key)).To(Succeed())
			Eventually(func() error {
				got := fetch(key)
				update(got)
				return k8sClient.Update(ctx, got)
			}, timeout, interval).Should(MatchError(ContainSubstring(message)))
		},
		Entry("identity", func(*apikeysv1alpha1.ApiKey) {},
			func(k *apikeysv1alpha1.ApiKey) { k.Spec.Identity = apikeysv1alpha1.IdentityOwner },
			"identity cannot change"),
		Entry("prefix", func(*apikeysv1alpha1.ApiKey) {},
			func(k *apikeysv1alpha1.ApiKey) { k.Spec.Prefix = "other" },
			"prefix cannot change"),
		Entry("secret name", func(k *apikeysv1alpha1.ApiKey) { k.Spec.Secret.Name = "first" },
			func(k *apikeysv1alpha1.ApiKey) { k.Spec.Secret.Name = "second" },
			"secret.name cannot change"),
		Entry("adding an owner", func(*apikeysv1alpha1.ApiKey) {},
			func(k *apikeysv1alpha1.ApiKey) { k.Spec.Owner = &apikeysv1alpha1.Owner{Username: "mallory"} },
			"spec.owner is set when the ApiKey is created"),
		Entry("changing the owner", func(k *apikeysv1alpha1.ApiKey) { k.Spec.Owner = &apikeysv1alpha1.Owner{Username: "alice"} },
			func(k *apikeysv1alpha1.ApiKey) { k.Spec.Owner.Username = "mallory" },
			"owner cannot change"),
	)
})

var _ = Describe("Rules only the operator can check", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	expectStalledWithoutToken := func(key *apikeysv1alpha1.ApiKey, reason, message string) {
		GinkgoHelper()
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		got := waitCondition(key, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, reason)
		Expect(condition(got, apikeysv1alpha1.ConditionStalled).Message).To(ContainSubstring(message))
		Expect(condition(got, apikeysv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
		Expect(recordsOf(got)).To(BeEmpty())
		Expect(got.Status.RecordName).To(BeEmpty())
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Name + "-token"}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a stalled key must get no Secret")
	}

	It("stalls a key that would outlive --max-ttl", func() {
		key := newKey(ns)
		key.Spec.TTL = &metav1.Duration{Duration: testMaxTTL + time.Hour}
		expectStalledWithoutToken(key, apikeysv1alpha1.ReasonInvalidExpiry, "longer than the operator's --max-ttl")
	})

	It("stalls a key whose expiresAt has passed", func() {
		key := newKey(ns)
		key.Spec.ExpiresAt = &metav1.Time{Time: time.Now().Add(-time.Minute)}
		expectStalledWithoutToken(key, apikeysv1alpha1.ReasonInvalidExpiry, "is not in the future")
	})

	ownerKey := func(owner *apikeysv1alpha1.Owner) *apikeysv1alpha1.ApiKey {
		key := newKey(ns)
		key.Spec.Identity = apikeysv1alpha1.IdentityOwner
		key.Spec.Owner = owner
		return key
	}
	alice := func() *apikeysv1alpha1.Owner {
		return &apikeysv1alpha1.Owner{Username: "alice", UID: "alice-uid", Groups: []string{"team-a", "system:authenticated"}}
	}

	It("stalls an Owner identity while the owner rule is not installed", func() {
		expectStalledWithoutToken(ownerKey(alice()), apikeysv1alpha1.ReasonOwnerPolicyNotInForce, "is missing")
	})

	It("stalls an Owner identity whose owner is a service account, an API key, a name a header would change, or carries a forbidden group", func() {
		sa := alice()
		sa.Username = "system:serviceaccount:argocd:argocd-application-controller"
		expectStalledWithoutToken(ownerKey(sa), apikeysv1alpha1.ReasonOwnerNotAllowed, "is a service account")
		byKey := alice()
		byKey.Username = "apikey:team-a:ci"
		expectStalledWithoutToken(ownerKey(byKey), apikeysv1alpha1.ReasonOwnerNotAllowed, "is an API key")
		forbidden := alice()
		forbidden.Groups = append(forbidden.Groups, "cluster-admins")
		expectStalledWithoutToken(ownerKey(forbidden), apikeysv1alpha1.ReasonForbiddenGroup, `"cluster-admins" is never carried`)
		// Names a forward-auth header would change on the way to a backend.
		spaced := alice()
		spaced.Username = "alice "
		expectStalledWithoutToken(ownerKey(spaced), apikeysv1alpha1.ReasonOwnerNotAllowed, "would change on its way to a backend")
	})

	It("issues an Owner identity admitted under the owner rule as its owner, with the owner's UID (or none) and groups", func() {
		installOwnerRule(nil)
		key := ownerKey(alice())
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)
		Expect(key.Status.Username).To(Equal("alice"))
		Expect(rec.Spec.Username).To(Equal("alice"))
		Expect(rec.Spec.UID).To(Equal("alice-uid"))
		Expect(rec.Spec.Groups).To(Equal([]string{"team-a", "system:authenticated"}))

		noUID := alice()
		noUID.UID = ""
		key = ownerKey(noUID)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		_, rec = expectOneLiveToken(waitReady(key))
		Expect(rec.Spec.UID).To(BeEmpty(), "an owner without a UID must not be given the ApiKey's")
	})

	It("stalls an Owner identity created before the owner rule came into force, or under an altered rule", func() {
		early := ownerKey(alice())
		Expect(k8sClient.Create(ctx, early)).To(Succeed())
		waitCondition(early, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonOwnerPolicyNotInForce)
		installOwnerRule(nil)
		touch(early)
		Eventually(func(g Gomega) {
			g.Expect(condition(fetch(early), apikeysv1alpha1.ConditionStalled).Message).To(ContainSubstring("not before this key was created"))
		}, timeout, interval).Should(Succeed())
		Expect(recordsOf(early)).To(BeEmpty())

		installOwnerRule(func(rule *policy.OwnerRule) {
			rule.Policy.Spec.Validations = rule.Policy.Spec.Validations[:1] // the impersonation checks are gone
		})
		expectStalledWithoutToken(ownerKey(alice()), apikeysv1alpha1.ReasonOwnerPolicyNotInForce, "differs from the operator's")
	})

	It("stalls an Owner identity created while the owner rule was paused in place, after an edit that only removes puts it back", func() {
		installOwnerRule(nil)
		rule, err := testPolicy.OwnerRule()
		Expect(err).NotTo(HaveOccurred())
		editPolicy := func(patch string) {
			GinkgoHelper()
			Expect(k8sClient.Patch(ctx, rule.Policy.DeepCopy(), client.RawPatch(types.JSONPatchType, []byte(patch)))).To(Succeed())
		}
		By("an administrator pausing the rule in place, and a key created meanwhile (admission checked nothing)")
		editPolicy(`[{"op":"add","path":"/spec/matchConditions/-","value":{"name":"pause","expression":"false"}}]`)
		paused := time.Now()
		Eventually(func() bool { return time.Now().Truncate(time.Second).After(paused) }, 3*time.Second, 50*time.Millisecond).Should(BeTrue())
		key := ownerKey(alice())
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		waitCondition(key, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonOwnerPolicyNotInForce)

		By("the pause removed by a JSON patch, which leaves no newer time in the policy's managed fields")
		n := len(rule.Policy.Spec.MatchConditions)
		editPolicy(fmt.Sprintf(`[{"op":"test","path":"/spec/matchConditions/%d/name","value":"pause"},{"op":"remove","path":"/spec/matchConditions/%d"}]`, n, n))
		touch(key)
		Eventually(func(g Gomega) {
			stalled := condition(fetch(key), apikeysv1alpha1.ConditionStalled)
			g.Expect(stalled).NotTo(BeNil(), "no longer stalled: the key was issued")
			g.Expect(stalled.Message).To(ContainSubstring("changed in place"))
		}, timeout, interval).Should(Succeed())
		Expect(recordsOf(key)).To(BeEmpty())

		By("the policy's status catching up (kube-controller-manager's write, which envtest does not run): a key created later is issued")
		current := &admissionregistrationv1.ValidatingAdmissionPolicy{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(rule.Policy), current)).To(Succeed())
		current.Status.ObservedGeneration = current.Generation
		Expect(k8sClient.Status().Update(ctx, current)).To(Succeed())
		checked := time.Now()
		Eventually(func() bool { return time.Now().Truncate(time.Second).After(checked) }, 3*time.Second, 50*time.Millisecond).Should(BeTrue())
		later := ownerKey(alice())
		Expect(k8sClient.Create(ctx, later)).To(Succeed())
		expectOneLiveToken(waitReady(later))
		touch(key)
		Eventually(func(g Gomega) {
			g.Expect(condition(fetch(key), apikeysv1alpha1.ConditionStalled).Message).To(ContainSubstring("not before this key was created"))
		}, timeout, interval).Should(Succeed())
		Expect(recordsOf(key)).To(BeEmpty())
	})

	It("keeps a rotation asked for while the owner policy's status lags an in-place change, and rotates once it catches up", func() {
		installOwnerRule(nil)
		key := ownerKey(alice())
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		_, before := expectOneLiveToken(waitReady(key))

		By("an upgrade changing the policy in place, its status not yet written (envtest runs no kube-controller-manager)")
		rule, err := testPolicy.OwnerRule()
		Expect(err).NotTo(HaveOccurred())
		n := len(rule.Policy.Spec.MatchConditions)
		for _, patch := range []string{
			`[{"op":"add","path":"/spec/matchConditions/-","value":{"name":"interim","expression":"true"}}]`,
			fmt.Sprintf(`[{"op":"remove","path":"/spec/matchConditions/%d"}]`, n),
		} {
			Expect(k8sClient.Patch(ctx, rule.Policy.DeepCopy(), client.RawPatch(types.JSONPatchType, []byte(patch)))).To(Succeed())
		}
		cur := fetch(key)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "during-the-upgrade"}
		Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
		Eventually(func(g Gomega) {
			stalled := condition(fetch(key), apikeysv1alpha1.ConditionStalled)
			g.Expect(stalled).NotTo(BeNil())
			g.Expect(stalled.Message).To(ContainSubstring("the request is kept"))
		}, timeout, interval).Should(Succeed())
		_, during := expectOneLiveToken(fetch(key))
		Expect(during.Name).To(Equal(before.Name), "a token was minted before the rule was shown in force")

		By("the status catching up: the request made meanwhile is honoured, untouched")
		current := &admissionregistrationv1.ValidatingAdmissionPolicy{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(rule.Policy), current)).To(Succeed())
		current.Status.ObservedGeneration = current.Generation
		Expect(k8sClient.Status().Update(ctx, current)).To(Succeed())
		Eventually(func(g Gomega) {
			got := fetch(key)
			g.Expect(got.Status.LastRotateRequest).To(Equal("during-the-upgrade"))
			g.Expect(got.Status.RecordName).NotTo(Equal(before.Name))
		}, timeout, interval).Should(Succeed())
	})

	It("rotates a personal key only while the owner rule is in force, and drops a request made while it was not", func() {
		installOwnerRule(nil)
		key := ownerKey(alice())
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		_, before := expectOneLiveToken(waitReady(key))

		By("asking for a rotation while the rule is gone: admission judged nothing, so nothing is minted")
		rule, err := testPolicy.OwnerRule()
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Delete(ctx, rule.Binding)).To(Succeed())
		cur := fetch(key)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "while-the-rule-was-gone"}
		Expect(k8sClient.Patch(ctx, cur, patch)).To(Succeed())
		waitCondition(key, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonOwnerPolicyNotInForce)
		Expect(condition(fetch(key), apikeysv1alpha1.ConditionStalled).Message).To(ContainSubstring("cannot rotate"))
		_, during := expectOneLiveToken(fetch(key))
		Expect(during.Name).To(Equal(before.Name), "a token was minted while the rule was gone")

		By("putting the rule back: the key sees it without being touched, and the request made meanwhile is not honoured")
		installOwnerRule(nil)
		waitReady(key)
		Consistently(func(g Gomega) {
			records := recordsOf(key)
			g.Expect(records).To(HaveLen(1))
			g.Expect(records[0].Name).To(Equal(before.Name), "the request made while the rule was gone was honoured")
		}, 2*time.Second, interval).Should(Succeed())

		By("asking again under the rule rotates")
		rotated := requestRotation(key, "under-the-rule")
		Expect(rotated.Status.RecordName).NotTo(Equal(before.Name))
	})

	It("stalls rather than overwrite a Secret it does not own", func() {
		foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"},
			StringData: map[string]string{"password": "hunter2"}}
		Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
		key := newKey(ns)
		key.Spec.Secret.Name = "taken"
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		got := waitCondition(key, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonSecretNameTaken)
		Expect(recordsOf(got)).To(BeEmpty())
		Eventually(func(g Gomega) {
			var warnings []string
			for _, e := range eventsFor(got) {
				if e.Type == corev1.EventTypeWarning {
					warnings = append(warnings, e.Reason+": "+e.Note)
				}
			}
			g.Expect(warnings).To(HaveExactElements(HavePrefix(apikeysv1alpha1.ReasonSecretNameTaken+": ")), "one Warning when the key stalls")
		}, timeout, interval).Should(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), foreign)).To(Succeed())
		Expect(foreign.Data).To(HaveKeyWithValue("password", []byte("hunter2")))
	})
})

var _ = Describe("One-time delivery", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("keeps the key and mints nothing when the Secret is deleted", func() {
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)

		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Status.SecretName}})).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(fetch(key).Status.SecretDeletedAt).NotTo(BeNil())
		}, timeout, interval).Should(Succeed())

		By("acting on a later edit without re-minting")
		key = fetch(key)
		key.Spec.Description = "edited after the Secret was deleted"
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		key = waitReady(key)
		Expect(condition(key, apikeysv1alpha1.ConditionReady).Message).To(ContainSubstring("was deleted"))
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Status.SecretName}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Secret must not be re-created")
		records := recordsOf(key)
		Expect(records).To(HaveLen(1))
		Expect(records[0].Name).To(Equal(rec.Name))
		Expect(records[0].Spec.TokenHash).To(Equal(rec.Spec.TokenHash))
	})

	It("changes nothing when someone tampers with the Secret", func() {
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)
		_, secret := readToken(key)

		By("ignoring edits to its data: the record, not the Secret, says which hash lives")
		secret.Data[apikeysv1alpha1.SecretTokenKey] = []byte("forged")
		Expect(k8sClient.Update(ctx, secret)).To(Succeed())
		key.Spec.Description = "edited after the Secret's data was"
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		key = waitReady(key)
		Expect(recordsOf(key)).To(ConsistOf(HaveField("Spec.TokenHash", rec.Spec.TokenHash)))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		Expect(string(secret.Data[apikeysv1alpha1.SecretTokenKey])).To(Equal("forged"), "the operator never writes a token twice")

		By("ignoring a forged Secret put in its place")
		forgedToken, err := token.Generate("ak")
		Expect(err).NotTo(HaveOccurred())
		seenTokens.add(forgedToken)
		Expect(k8sClient.Delete(ctx, secret)).To(Succeed())
		forged := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secret.Name},
			Data: map[string][]byte{apikeysv1alpha1.SecretTokenKey: []byte(forgedToken)}}
		Expect(k8sClient.Create(ctx, forged)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(fetch(key).Status.SecretDeletedAt).NotTo(BeNil())
		}, timeout, interval).Should(Succeed())

		key = fetch(key)
		key.Spec.Description = "edited after tampering"
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		key = waitReady(key)
		records := recordsOf(key)
		Expect(records).To(HaveLen(1))
		Expect(records[0].Spec.TokenHash).To(Equal(rec.Spec.TokenHash))
		Expect(records[0].Spec.TokenHash).NotTo(Equal(token.Hash(forgedToken)))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(forged), forged)).To(Succeed())
		Expect(token.Hash(string(forged.Data[apikeysv1alpha1.SecretTokenKey]))).To(Equal(token.Hash(forgedToken)), "the forged Secret was rewritten")
	})

	It("does not take a Secret forged with its label and owner reference for the delivered one", func() {
		key, secretName := issuedWithSecretGone(ns)

		By("someone who may create Secrets making one that looks delivered, in its place")
		forged := secretClaiming(key, secretName)
		forged.Labels = map[string]string{apikeysv1alpha1.ManagedByLabel: apikeysv1alpha1.ManagedByValue}
		Expect(k8sClient.Create(ctx, forged)).To(Succeed())
		Eventually(func() bool {
			return reconciler.secrets.controlledBy(ns, forged.Name, key.UID, "")
		}, timeout, interval).Should(BeTrue(), "the watch of delivered Secrets sees the forgery")

		key = fetch(key)
		key.Spec.Description = "edited after the forgery"
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		key = waitReady(key)
		Expect(key.Status.SecretDeletedAt).NotTo(BeNil(), "status must keep saying the delivered Secret is gone")
		Expect(condition(key, apikeysv1alpha1.ConditionReady).Message).To(ContainSubstring("was deleted"))
	})

	It("deletes the Secret after secret.deleteAfter and keeps the key valid", func() {
		key := newKey(ns)
		key.Spec.Secret.DeleteAfter = &metav1.Duration{Duration: 2 * time.Second}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)

		Eventually(func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Status.SecretName}, &corev1.Secret{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
			g.Expect(fetch(key).Status.SecretDeletedAt).NotTo(BeNil())
		}, timeout, interval).Should(Succeed())
		key = waitReady(key)
		Expect(recordsOf(key)).To(ConsistOf(HaveField("Name", rec.Name)))
		Eventually(func(g Gomega) {
			g.Expect(eventsFor(key)).To(ContainElement(HaveField("Reason", apikeysv1alpha1.ReasonSecretDeleted)))
		}, timeout, interval).Should(Succeed())
	})

	It("does not report the Secret deleted while a finalizer keeps it, token included", func() {
		key := newKey(ns)
		key.Spec.Secret.DeleteAfter = &metav1.Duration{Duration: 4 * time.Second}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		secretKey := client.ObjectKey{Namespace: ns, Name: key.Status.SecretName}
		setFinalizers := func(finalizers []string) {
			secret := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, secretKey, secret)).To(Succeed())
			patch := client.MergeFrom(secret.DeepCopy())
			secret.Finalizers = finalizers
			Expect(k8sClient.Patch(ctx, secret, patch)).To(Succeed())
		}
		By("a backup tool's finalizer on the Secret")
		setFinalizers([]string{"backup.example.com/hold"})
		DeferCleanup(func() {
			secret := &corev1.Secret{}
			if err := k8sClient.Get(ctx, secretKey, secret); err == nil && len(secret.Finalizers) > 0 {
				setFinalizers(nil)
			}
		})

		By("the operator deletes it at deleteAfter; the finalizer keeps it")
		Eventually(func(g Gomega) {
			secret := &corev1.Secret{}
			g.Expect(k8sClient.Get(ctx, secretKey, secret)).To(Succeed())
			g.Expect(secret.DeletionTimestamp).NotTo(BeNil())
		}, timeout, interval).Should(Succeed())
		Consistently(func() *metav1.Time { return fetch(key).Status.SecretDeletedAt }, 2*time.Second, interval).
			Should(BeNil(), "status says the Secret is gone while it still holds the token")
		reasons := func() []string {
			events := eventsFor(key)
			got := make([]string, 0, len(events))
			for _, e := range events {
				got = append(got, e.Reason)
			}
			return got
		}
		Eventually(reasons, timeout, interval).Should(ContainElement(apikeysv1alpha1.ReasonSecretDeletionBlocked))
		Expect(reasons()).NotTo(ContainElement(apikeysv1alpha1.ReasonSecretDeleted), "an event says the Secret is gone")

		By("once the finalizer goes, so does the Secret, and status says so")
		setFinalizers(nil)
		Eventually(func(g Gomega) {
			err := k8sClient.Get(ctx, secretKey, &corev1.Secret{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
			g.Expect(fetch(key).Status.SecretDeletedAt).NotTo(BeNil())
		}, timeout, interval).Should(Succeed())
	})
})

var _ = Describe("Editing a key", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("carries suspension and scope edits to the record without a new token", func() {
		key := newKey(ns)
		key.Spec.Scopes = []string{"links:read"}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)

		key.Spec.Suspended = true
		key.Spec.Scopes = []string{"links:read", "links:write"}
		key.Spec.Audiences = []string{"shortener"}
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		key = waitCondition(key, apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonSuspended)
		Expect(condition(key, apikeysv1alpha1.ConditionSuspended)).To(HaveField("Status", metav1.ConditionTrue))
		Eventually(func(g Gomega) {
			records := recordsOf(key)
			g.Expect(records).To(HaveLen(1))
			g.Expect(records[0].Name).To(Equal(rec.Name))
			g.Expect(records[0].Spec.TokenHash).To(Equal(rec.Spec.TokenHash))
			g.Expect(records[0].Spec.Suspended).To(BeTrue())
			g.Expect(records[0].Spec.Scopes).To(Equal([]string{"links:read", "links:write"}))
			g.Expect(records[0].Spec.Audiences).To(Equal([]string{"shortener"}))
		}, timeout, interval).Should(Succeed())

		By("resuming")
		key.Spec.Suspended = false
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		key = waitReady(key)
		Expect(condition(key, apikeysv1alpha1.ConditionSuspended)).To(BeNil())
		Eventually(func(g Gomega) {
			g.Expect(recordsOf(key)).To(ConsistOf(And(HaveField("Name", rec.Name), HaveField("Spec.Suspended", false))))
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(eventsFor(key)).To(ContainElements(HaveField("Reason", apikeysv1alpha1.ReasonSuspended), HaveField("Reason", apikeysv1alpha1.ReasonResumed)))
		}, timeout, interval).Should(Succeed())
	})

	It("marks the key Expired at its expiry instant", func() {
		key := newKey(ns)
		key.Spec.TTL = &metav1.Duration{Duration: 3 * time.Second}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)
		expiresAt := key.Status.ExpiresAt.Time
		Expect(rec.Spec.ExpiresAt.Time).To(Equal(expiresAt))

		key = waitCondition(key, apikeysv1alpha1.ConditionExpired, metav1.ConditionTrue, apikeysv1alpha1.ReasonExpired)
		marked := condition(key, apikeysv1alpha1.ConditionExpired).LastTransitionTime.Time
		// Condition times have second precision; expiry is on a whole second.
		Expect(marked).To(BeTemporally(">=", expiresAt))
		Expect(marked).To(BeTemporally("<=", expiresAt.Add(2*time.Second)))
		Expect(condition(key, apikeysv1alpha1.ConditionReady)).To(HaveField("Reason", apikeysv1alpha1.ReasonExpired))
		Expect(condition(key, apikeysv1alpha1.ConditionStalled)).To(HaveField("Reason", apikeysv1alpha1.ReasonExpired))
		Expect(recordsOf(key)).To(ConsistOf(HaveField("Spec.ExpiresAt.Time", expiresAt)))
	})
})

var _ = Describe("Deleting a key", func() {
	It("deletes its records before it goes", func() {
		ns := newNamespace()
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		expectOneLiveToken(key)

		Expect(k8sClient.Delete(ctx, key)).To(Succeed())
		Eventually(func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(key), &apikeysv1alpha1.ApiKey{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}, timeout, interval).Should(Succeed())
		Expect(recordsOf(key)).To(BeEmpty())
	})
})

var _ = Describe("A key created again under a deleted key's name", func() {
	It("gets none of the deleted key's token or records, and waits for its Secret to go", func() {
		ns := newNamespace()
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		oldTok, oldSecret := readToken(key)

		By("deleting the key and creating it again as soon as the name is free")
		Expect(k8sClient.Delete(ctx, key)).To(Succeed())
		again := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Name},
			Spec: apikeysv1alpha1.ApiKeySpec{Scopes: []string{"other:read"}}}
		Eventually(func() error { return k8sClient.Create(ctx, again) }, timeout, interval).Should(Succeed())
		Expect(again.UID).NotTo(Equal(key.UID))
		Expect(recordsOf(key)).To(BeEmpty(), "the deleted key's records outlived it")

		By("the deleted key's Secret, until garbage collection takes it, holds the new key back")
		waitCondition(again, apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonSecretNameTaken)
		Expect(recordsOf(again)).To(BeEmpty())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(oldSecret), oldSecret)).To(Succeed())
		Expect(token.Hash(string(oldSecret.Data[apikeysv1alpha1.SecretTokenKey]))).To(Equal(token.Hash(oldTok)),
			"the old Secret was written into")

		By("once it is gone, as the garbage collector would delete it, the new key gets a token of its own")
		Expect(k8sClient.Delete(ctx, oldSecret, client.Preconditions{UID: &oldSecret.UID})).To(Succeed())
		again = waitReady(again)
		newTok, rec := expectOneLiveToken(again)
		Expect(token.Hash(newTok)).NotTo(Equal(token.Hash(oldTok)), "the new key got the deleted key's token")
		Expect(rec.Spec.ApiKey.UID).To(Equal(string(again.UID)))
		Expect(rec.Spec.Scopes).To(ConsistOf("other:read"))
		var all apikeysv1alpha1.ApiKeyRecordList
		Expect(k8sClient.List(ctx, &all)).To(Succeed())
		for _, r := range all.Items {
			Expect(r.Spec.TokenHash).NotTo(Equal(token.Hash(oldTok)), "record %s keeps the deleted key's token", r.Name)
			Expect(r.Spec.ApiKey.UID).NotTo(Equal(string(key.UID)), "record %s belongs to the deleted key", r.Name)
		}
	})
})

var _ = Describe("Keeping the token secret", func() {
	It("never puts it in logs (any verbosity), events, status or records over a full lifecycle", func() {
		ns := newNamespace()
		key := newKey(ns)
		key.Spec.Scopes = []string{"links:read"}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		tok, _ := expectOneLiveToken(key)

		key.Spec.Suspended = true
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		key = waitCondition(key, apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonSuspended)
		key.Spec.Suspended = false
		key.Spec.Scopes = append(key.Spec.Scopes, "links:write")
		Expect(k8sClient.Update(ctx, key)).To(Succeed())
		key = waitReady(key)
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Status.SecretName}})).To(Succeed())
		Eventually(func(g Gomega) { g.Expect(fetch(key).Status.SecretDeletedAt).NotTo(BeNil()) }, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(eventsFor(key)).To(ContainElement(HaveField("Reason", apikeysv1alpha1.ReasonSecretDeleted)))
		}, timeout, interval).Should(Succeed())
		Expect(k8sClient.Delete(ctx, key)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), &apikeysv1alpha1.ApiKey{}))
		}, timeout, interval).Should(BeTrue())

		expectNoLeak([]string{tok})
	})
})

// eventsFor lists the events.k8s.io events regarding key.
func eventsFor(key *apikeysv1alpha1.ApiKey) []eventsv1.Event {
	GinkgoHelper()
	var list eventsv1.EventList
	Expect(k8sClient.List(ctx, &list, client.InNamespace(key.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.UID == key.UID {
			out = append(out, e)
		}
	}
	return out
}

var _ = Describe("An ApiKey the controller cannot read", func() {
	It("keeps issuing every other key, and lets the unreadable one go", func() {
		ns := newNamespace()
		By("an ApiKey with a ttl no Go program can decode, stored as an earlier release's CRD let any tenant")
		unreadable := storeUnreadableKey(ns)

		By("another key in the namespace is issued all the same")
		key := newKey(ns)
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		waitReady(key)

		By("the unreadable key can be deleted: the controller stamped nothing on it it cannot take off")
		Expect(k8sClient.Delete(ctx, unreadable)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(unreadable), unreadable.DeepCopy()))
		}, timeout, interval).Should(BeTrue())
	})
})

// storeUnreadableKey stores, in namespace, an ApiKey with ttl 3000000h,
// which overflows Go's time.Duration: it takes the CRD's bound off spec.ttl
// for the write, as an earlier release's CRD had none, and puts it back
// once the spec is done with the key (which must be gone by then: the
// bound's error is not ratcheted, so no write of it would pass).
func storeUnreadableKey(namespace string) *unstructured.Unstructured {
	GinkgoHelper()
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "apikeys." + apikeysv1alpha1.GroupVersion.Group}, crd)).To(Succeed())
	original := crd.DeepCopy()
	versions, _, err := unstructured.NestedSlice(crd.Object, "spec", "versions")
	Expect(err).NotTo(HaveOccurred())
	unstructured.RemoveNestedField(versions[0].(map[string]any),
		"schema", "openAPIV3Schema", "properties", "spec", "properties", "ttl", "x-kubernetes-validations")
	Expect(unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions")).To(Succeed())
	Eventually(func() error {
		cur := original.DeepCopy()
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(crd), cur); err != nil {
			return err
		}
		crd.SetResourceVersion(cur.GetResourceVersion())
		return k8sClient.Update(ctx, crd)
	}, timeout, interval).Should(Succeed())
	DeferCleanup(func() {
		Eventually(func() error {
			cur := crd.DeepCopy()
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(crd), cur); err != nil {
				return err
			}
			restored := original.DeepCopy()
			restored.SetResourceVersion(cur.GetResourceVersion())
			return k8sClient.Update(ctx, restored)
		}, timeout, interval).Should(Succeed())
	})

	bad := &unstructured.Unstructured{}
	bad.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"))
	bad.SetNamespace(namespace)
	bad.SetName("unreadable")
	Expect(unstructured.SetNestedField(bad.Object, "3000000h", "spec", "ttl")).To(Succeed())
	Eventually(func() error { return k8sClient.Create(ctx, bad.DeepCopy()) }, timeout, interval).Should(Succeed(),
		"kube-apiserver stores the key once the CRD without the bound is in force")
	// Before the CRD is restored (cleanups run last first): while the key
	// stays, nothing can list ApiKeys typed, the suite's own checks included.
	DeferCleanup(func() {
		Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, bad.DeepCopy()))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(bad), bad.DeepCopy()))
		}, timeout, interval).Should(BeTrue())
	})
	return bad
}
