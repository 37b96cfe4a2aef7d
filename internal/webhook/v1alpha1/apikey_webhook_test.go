package v1alpha1

import (
	"fmt"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

func newKey(identity apikeysv1alpha1.Identity) *apikeysv1alpha1.ApiKey {
	return &apikeysv1alpha1.ApiKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: teamA, Name: "key-" + rand.String(6)},
		Spec:       apikeysv1alpha1.ApiKeySpec{Identity: identity},
	}
}

// readyToken waits for key to be Ready and returns its token (never printed).
func readyToken(key *apikeysv1alpha1.ApiKey) (string, *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	got := &apikeysv1alpha1.ApiKey{}
	Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, "Ready")).To(BeTrue(), "%v", got.Status.Conditions)
	}, 20*time.Second, 50*time.Millisecond).Should(Succeed())
	secret := &corev1.Secret{}
	Expect(admin.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: got.Status.SecretName}, secret)).To(Succeed())
	return string(secret.Data["token"]), got
}

// secretToken is the token key's Secret holds now (never printed).
func secretToken(key *apikeysv1alpha1.ApiKey) string {
	GinkgoHelper()
	secret := &corev1.Secret{}
	Expect(admin.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Name + "-token"}, secret)).To(Succeed())
	return string(secret.Data["token"])
}

// impersonating is a client of the administrator impersonating a user with
// a UID (envtest's users have none), who may edit ApiKeys in team-a.
func impersonating(user, uid string, groups ...string) client.Client {
	GinkgoHelper()
	bindInTeamA(user, "apikey-editor-role")
	cfg := rest.CopyConfig(adminCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, UID: uid, Groups: groups}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	return c
}

func expectDenied(err error, message string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred())
	Expect(err.Error()).To(ContainSubstring(message))
}

var _ = Describe("Who a key may be", func() {
	It("stamps the creator as owner of a Key identity, without groups, and keeps it", func() {
		key := newKey(apikeysv1alpha1.IdentityKey)
		Expect(alice.Create(ctx, key)).To(Succeed())
		Expect(key.Spec.Owner).To(Equal(&apikeysv1alpha1.Owner{Username: "alice"}))
		Expect(key.Spec.Prefix).To(Equal("ak"))
		Expect(key.Spec.Secret.Name).To(Equal(key.Name + "-token"))
		Expect(key.Finalizers).To(ConsistOf(apikeysv1alpha1.RecordsFinalizer), "set with the create, sparing issuance a write")

		By("stamping the UID of a creator who has one, and keeping a finalizer the request set")
		withUID := newKey(apikeysv1alpha1.IdentityKey)
		withUID.Finalizers = []string{"example.com/hold"}
		Expect(impersonating("dave", "dave-uid", "team-a").Create(ctx, withUID)).To(Succeed())
		Expect(withUID.Spec.Owner).To(Equal(&apikeysv1alpha1.Owner{Username: "dave", UID: "dave-uid"}))
		Expect(withUID.Finalizers).To(ConsistOf("example.com/hold", apikeysv1alpha1.RecordsFinalizer))

		By("letting a creator in more groups than a key may name (64) create one")
		groups := make([]string, 0, 71)
		groups = append(groups, "team-a")
		for i := range 70 {
			groups = append(groups, fmt.Sprintf("directory-group-%02d", i))
		}
		crowded := newKey(apikeysv1alpha1.IdentityKey)
		Expect(impersonating("heidi", "", groups...).Create(ctx, crowded)).To(Succeed())
		Expect(crowded.Spec.Owner).To(Equal(&apikeysv1alpha1.Owner{Username: "heidi"}))

		By("naming the Secret of a key that names it \"\"")
		blank := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": apikeysv1alpha1.GroupVersion.String(), "kind": "ApiKey",
			"metadata": map[string]any{"namespace": teamA, "name": "blank-" + rand.String(6)},
			"spec":     map[string]any{"secret": map[string]any{"name": ""}},
		}}
		Expect(alice.Create(ctx, blank)).To(Succeed())
		secretName, _, _ := unstructured.NestedString(blank.Object, "spec", "secret", "name")
		Expect(secretName).To(Equal(blank.GetName() + "-token"))

		By("leaving a Secret name and an owner the request gave to the owner rule")
		named := newKey(apikeysv1alpha1.IdentityKey)
		named.Spec.Secret.Name = "orders-api-token"
		named.Spec.Owner = &apikeysv1alpha1.Owner{Username: "alice"}
		Expect(alice.Create(ctx, named)).To(Succeed())
		Expect(named.Spec.Secret.Name).To(Equal("orders-api-token"))
		Expect(named.Spec.Owner).To(Equal(&apikeysv1alpha1.Owner{Username: "alice"}))

		_, key = readyToken(key)

		By("refusing to change owner or identity later")
		changed := key.DeepCopy()
		changed.Spec.Owner.Username = "mallory"
		expectDenied(alice.Patch(ctx, changed, client.MergeFrom(key)), "owner cannot change")
		changed = key.DeepCopy()
		changed.Spec.Identity = apikeysv1alpha1.IdentityOwner
		expectDenied(alice.Patch(ctx, changed, client.MergeFrom(key)), "identity cannot change")

		By("putting back an owner a GitOps apply dropped, so nothing drifts")
		dropped := key.DeepCopy()
		dropped.Spec.Owner = nil
		dropped.Spec.Description = "applied from Git"
		Expect(alice.Patch(ctx, dropped, client.MergeFrom(key))).To(Succeed())
		Expect(dropped.Spec.Owner).To(Equal(key.Spec.Owner))
	})

	It("issues alice's personal key as alice, with her groups", func() {
		key := newKey(apikeysv1alpha1.IdentityOwner)
		Expect(alice.Create(ctx, key)).To(Succeed())
		tok, key := readyToken(key)
		Expect(key.Status.Username).To(Equal("alice"))
		who := verifyAs(tok)
		Expect(who.Username).To(Equal("alice"))
		Expect(who.Groups).To(ConsistOf("team-a", "system:authenticated"))
	})

	It("refuses a key for bob from alice, and allows it from a user who may impersonate bob", func() {
		forBob := newKey(apikeysv1alpha1.IdentityOwner)
		forBob.Spec.Owner = &apikeysv1alpha1.Owner{Username: "bob", Groups: []string{"team-b"}}
		expectDenied(alice.Create(ctx, forBob.DeepCopy()), "alice may not create a key owned by bob")
		expectDenied(alice.Create(ctx, forBob.DeepCopy()), "permission to impersonate that user")

		Expect(carol.Create(ctx, forBob)).To(Succeed())
		tok, _ := readyToken(forBob)
		who := verifyAs(tok)
		Expect(who.Username).To(Equal("bob"))
		Expect(who.Groups).To(ConsistOf("team-b"))

		By("and refuses bob's name with a group carol may not impersonate")
		withAdmins := newKey(apikeysv1alpha1.IdentityOwner)
		withAdmins.Spec.Owner = &apikeysv1alpha1.Owner{Username: "bob", Groups: []string{"team-b", "payroll"}}
		expectDenied(carol.Create(ctx, withAdmins), "only groups you may impersonate")
	})

	It("lets one who may impersonate each group by name make a key with 24 of them, and says why not 25", func() {
		// Each group costs kube-apiserver an authorization check, and it
		// caps what one expression and one policy may spend on them.
		groups := make([]string, 25)
		for i := range groups {
			groups[i] = fmt.Sprintf("squad-%02d", i)
		}
		Expect(admin.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: objectMeta("grace-impersonates-dave"), Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"dave"}},
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"uids"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"dave-uid"}},
			{APIGroups: []string{""}, Resources: []string{"groups"}, Verbs: []string{"impersonate"}, ResourceNames: groups},
		}})).To(Succeed())
		Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: objectMeta("grace-impersonates-dave"),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "grace-impersonates-dave"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "grace"}},
		})).To(Succeed())
		grace := impersonating("grace", "")
		forDave := func(groups ...string) *apikeysv1alpha1.ApiKey {
			key := newKey(apikeysv1alpha1.IdentityOwner)
			key.Spec.Owner = &apikeysv1alpha1.Owner{Username: "dave", UID: "dave-uid", Groups: groups}
			return key
		}

		Eventually(func() error { return grace.Create(ctx, forDave(groups[:24]...), client.DryRunAll) }, 10*time.Second, 50*time.Millisecond).
			Should(Succeed(), "26 checks (user, UID, 24 groups) fit in what kube-apiserver allows one policy")
		expectDenied(grace.Create(ctx, forDave(groups...), client.DryRunAll), "at most 24 groups its creator is not in")

		By("still checking every one of the 24")
		notAllowed := slices.Clone(groups[:24])
		notAllowed[23] = "payroll"
		expectDenied(grace.Create(ctx, forDave(notAllowed...), client.DryRunAll), "only groups you may impersonate")
	})

	It("lets only the owner, or one who may impersonate the owner, rotate an Owner key or change its spec", func() {
		key := newKey(apikeysv1alpha1.IdentityOwner)
		Expect(alice.Create(ctx, key)).To(Succeed())
		first, key := readyToken(key)

		By("refusing bob, an editor of the namespace, changes that would hand him a new token as alice, and any other spec change")
		attempts := map[string]func(*apikeysv1alpha1.ApiKey){
			"rotate on request": func(k *apikeysv1alpha1.ApiKey) {
				k.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "bob-" + rand.String(4)}
			},
			"rotate on a schedule": func(k *apikeysv1alpha1.ApiKey) {
				k.Spec.Rotation = &apikeysv1alpha1.Rotation{Every: &metav1.Duration{Duration: 2 * time.Hour}}
			},
			"relabel the Secret": func(k *apikeysv1alpha1.ApiKey) {
				k.Spec.Secret.Labels = map[string]string{"sync-to": "bobs-namespace"}
			},
			// A new lifetime ends an Expired stall, and the next pass mints.
			"give it a lifetime": func(k *apikeysv1alpha1.ApiKey) {
				k.Spec.TTL = &metav1.Duration{Duration: time.Hour}
			},
			"describe it": func(k *apikeysv1alpha1.ApiKey) { k.Spec.Description = "seen by bob" },
		}
		// Merge patches, as kubectl annotate and kubectl edit send: no
		// resourceVersion, so only admission can refuse them.
		for what, change := range attempts {
			for who, c := range map[string]client.Client{"bob": bob, "carol": carol} {
				edited := key.DeepCopy()
				change(edited)
				err := c.Patch(ctx, edited, client.MergeFrom(key))
				Expect(err).To(HaveOccurred(), "%s was allowed to %s alice's personal key", who, what)
				Expect(err.Error()).To(ContainSubstring(who+" may not rotate, or change the spec of, a key owned by alice"), what)
			}
		}
		// Compared by hash: a failure must not print a token.
		Expect(token.Hash(secretToken(key))).To(Equal(token.Hash(first)), "a refused change minted a token")

		By("letting bob label it: metadata is not the owner's alone")
		edited := key.DeepCopy()
		edited.Labels = map[string]string{"team": "a"}
		Expect(bob.Patch(ctx, edited, client.MergeFrom(key))).To(Succeed())

		By("letting alice rotate it, to a token that is still alice")
		edited = key.DeepCopy()
		edited.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "alice-1"}
		Expect(alice.Patch(ctx, edited, client.MergeFrom(key))).To(Succeed())
		Eventually(func() bool { return secretToken(key) != first }, 20*time.Second, 50*time.Millisecond).
			Should(BeTrue(), "alice's rotation delivered no new token")
		Expect(verifyAs(secretToken(key)).Username).To(Equal("alice"))

		By("letting carol, who may impersonate bob, rotate a key owned by bob")
		forBob := newKey(apikeysv1alpha1.IdentityOwner)
		forBob.Spec.Owner = &apikeysv1alpha1.Owner{Username: "bob", Groups: []string{"team-b"}}
		Expect(carol.Create(ctx, forBob)).To(Succeed())
		_, forBob = readyToken(forBob)
		edited = forBob.DeepCopy()
		edited.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "carol-1"}
		Expect(carol.Patch(ctx, edited, client.MergeFrom(forBob))).To(Succeed())
	})

	It("tells an owner who has left one of the key's groups to recreate it, rather than to impersonate", func() {
		key := newKey(apikeysv1alpha1.IdentityOwner)
		Expect(impersonating("ivan", "", "team-a").Create(ctx, key)).To(Succeed())
		Expect(key.Spec.Owner.Groups).To(ContainElement("team-a"))
		moved := impersonating("ivan", "", "team-z") // ivan has left team-a since
		edited := key.DeepCopy()
		edited.Spec.Description = "edited after a reorganisation"
		expectDenied(moved.Patch(ctx, edited, client.MergeFrom(key)), "is no longer in")
	})

	It("checks impersonation of a ServiceAccount owner as kube-apiserver does: on serviceaccounts, not users", func() {
		const sa = "system:serviceaccount:ci:minter"
		grantImpersonation := func(user, name string, rule rbacv1.PolicyRule) {
			GinkgoHelper()
			Expect(admin.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: objectMeta(name), Rules: []rbacv1.PolicyRule{rule}})).To(Succeed())
			Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: objectMeta(name),
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
			})).To(Succeed())
		}
		grantImpersonation("frank", "frank-impersonates-the-name", rbacv1.PolicyRule{
			APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{sa}})
		grantImpersonation("erin", "erin-impersonates-minter", rbacv1.PolicyRule{
			APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"minter"}})
		frank := impersonating("frank", "")
		erin := impersonating("erin", "")

		forMinter := func() *apikeysv1alpha1.ApiKey {
			key := newKey(apikeysv1alpha1.IdentityOwner)
			key.Spec.Owner = &apikeysv1alpha1.Owner{Username: sa}
			return key
		}
		// kube-apiserver would not let frank act as the ServiceAccount.
		Eventually(func() error { return frank.Create(ctx, forMinter(), client.DryRunAll) }, 10*time.Second, 50*time.Millisecond).
			Should(MatchError(ContainSubstring("frank may not create a key owned by " + sa)))
		Eventually(func() error { return erin.Create(ctx, forMinter(), client.DryRunAll) }, 10*time.Second, 50*time.Millisecond).
			Should(Succeed(), "erin may impersonate ci/minter, as kube-apiserver checks it")
	})

	It("never lets a key carry system:masters", func() {
		By("stamping a masters member's key without that group")
		key := newKey(apikeysv1alpha1.IdentityOwner)
		Expect(masters.Create(ctx, key)).To(Succeed())
		Expect(key.Spec.Owner.Groups).NotTo(ContainElement("system:masters"))
		tok, _ := readyToken(key)
		Expect(verifyAs(tok).Groups).NotTo(ContainElement("system:masters"))

		By("refusing a key that names the group outright")
		claim := newKey(apikeysv1alpha1.IdentityOwner)
		claim.Spec.Owner = &apikeysv1alpha1.Owner{Username: "root", Groups: []string{"system:masters"}}
		expectDenied(masters.Create(ctx, claim), "names a group no key may carry")
	})
})

var _ = Describe("How long a key may live and what it may say", func() {
	DescribeTable("refusing with a message",
		func(mutate func(*apikeysv1alpha1.ApiKey), message string) {
			key := newKey(apikeysv1alpha1.IdentityKey)
			mutate(key)
			expectDenied(alice.Create(ctx, key), message)
		},
		Entry("a ttl beyond --max-ttl", func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.TTL = &metav1.Duration{Duration: suiteMaxTTL + time.Hour}
		}, "longer than the operator's --max-ttl"),
		Entry("an expiresAt beyond --max-ttl", func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.ExpiresAt = &metav1.Time{Time: time.Now().Add(suiteMaxTTL + 24*time.Hour)}
		}, "longer than the operator's --max-ttl"),
		Entry("an expiresAt in the past", func(k *apikeysv1alpha1.ApiKey) {
			k.Spec.ExpiresAt = &metav1.Time{Time: time.Now().Add(-time.Minute)}
		}, "is not in the future"),
		Entry("a malformed scope", func(k *apikeysv1alpha1.ApiKey) { k.Spec.Scopes = []string{"Links Read"} }, "spec.scopes[0]"),
	)

	It("refuses an edit that pushes expiry beyond --max-ttl from issuance", func() {
		key := newKey(apikeysv1alpha1.IdentityKey)
		key.Spec.TTL = &metav1.Duration{Duration: time.Hour}
		Expect(alice.Create(ctx, key)).To(Succeed())
		_, key = readyToken(key)
		key.Spec.TTL = &metav1.Duration{Duration: suiteMaxTTL + time.Hour}
		expectDenied(alice.Update(ctx, key), "longer than the operator's --max-ttl")
	})
})

var _ = Describe("What a namespace editor can touch", func() {
	It("manages ApiKeys but cannot write records or ApiKey status", func() {
		key := newKey(apikeysv1alpha1.IdentityKey)
		Expect(alice.Create(ctx, key)).To(Succeed())
		_, key = readyToken(key)

		record := &apikeysv1alpha1.ApiKeyRecord{
			ObjectMeta: metav1.ObjectMeta{Name: "sha256-" + rand.String(10)},
			Spec: apikeysv1alpha1.ApiKeyRecordSpec{
				TokenHash: "sha256:" + "0000000000000000000000000000000000000000000000000000000000000000",
				TokenHint: "ak_fake…", Username: "system:admin", IssuedAt: metav1.Now(),
				ApiKey: apikeysv1alpha1.ApiKeyReference{Namespace: teamA, Name: key.Name, UID: string(key.UID)},
			},
		}
		Expect(apierrors.IsForbidden(alice.Create(ctx, record))).To(BeTrue(), "a tenant must not create records")
		var records apikeysv1alpha1.ApiKeyRecordList
		Expect(apierrors.IsForbidden(alice.List(ctx, &records))).To(BeTrue(), "a tenant must not read records")

		patch := client.MergeFrom(key.DeepCopy())
		key.Status.RecordName = "sha256-forged"
		Expect(apierrors.IsForbidden(alice.Status().Patch(ctx, key, patch))).To(BeTrue(), "a tenant must not write status")

		Expect(apierrors.IsForbidden(alice.Create(ctx, newKeyIn("default")))).To(BeTrue(), "alice's role is in team-a only")
	})
})

func newKeyIn(ns string) *apikeysv1alpha1.ApiKey {
	k := newKey(apikeysv1alpha1.IdentityKey)
	k.Namespace = ns
	return k
}
