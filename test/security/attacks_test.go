//go:build e2e

package security

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// The manager's admission endpoints, as config/webhook names them.
const (
	mutatePath   = "/mutate-apikeys-dev-v1alpha1-apikey"
	validatePath = "/validate-apikeys-dev-v1alpha1-apikey"
)

var _ = Describe("The harness", func() {
	It("runs both binaries as their ServiceAccounts and issues a Key key that authenticates at /verify, /auth and kube-apiserver", func() {
		ns := tenantNamespace(alice)
		tok, key := issueKey(alice, newKey(ns, "plain"))
		expectTokenWorks(tok, "apikey:"+ns+":"+key.Name, "the plain key's token")
		Expect(recordHashes(recordsOf(key))).To(ConsistOf(token.Hash(tok)))
	})
})

var _ = Describe("Attack 1: status decides which token hash is live", func() {
	It("does not let the auth-only ServiceAccount write ApiKey status or records' specs", func() {
		ns := tenantNamespace(alice)
		_, key := issueKey(alice, newKey(ns, "victim"))
		forged, forgedName := forgeToken("auth-only attack on " + key.Name)

		err := authServerSA.client.Status().Patch(ctx, key.DeepCopy(), statusPatch(map[string]any{"recordName": forgedName}))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(),
			"the auth-only ServiceAccount could patch apikeys/status (error: %v)", err)

		records := recordsOf(key)
		Expect(records).To(HaveLen(1))
		err = authServerSA.client.Patch(ctx, &records[0], client.RawPatch(types.MergePatchType,
			[]byte(`{"spec":{"username":"system:admin"}}`)))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(),
			"the auth-only ServiceAccount could patch an ApiKeyRecord's spec (error: %v)", err)
		err = authServerSA.client.Create(ctx, &apikeysv1alpha1.ApiKeyRecord{
			ObjectMeta: metav1.ObjectMeta{Name: forgedName},
			Spec: apikeysv1alpha1.ApiKeyRecordSpec{
				TokenHash: token.Hash(forged), TokenHint: token.Hint(forged), Username: "system:admin",
				ApiKey: apikeysv1alpha1.ApiKeyReference{Namespace: ns, Name: key.Name, UID: string(key.UID)},
			},
		})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(),
			"the auth-only ServiceAccount could create an ApiKeyRecord (error: %v)", err)
	})

	It("does not let a tenant holding apikeys/status choose the live token of a Ready key, or move its expiry", func() {
		ns := tenantNamespace(mallory)
		grantWildcard(ns, mallory.name)
		tok, key := issueKey(mallory, newKey(ns, "forged"))
		username := "apikey:" + ns + ":" + key.Name
		records := recordsOf(key)
		Expect(recordHashes(records)).To(ConsistOf(token.Hash(tok)))
		realRecord := records[0]

		By("mallory writes the hash of a token she made into status, and an issuance five years ahead")
		forged, forgedName := forgeToken(key.Name)
		Expect(mallory.client.Status().Patch(ctx, key.DeepCopy(), statusPatch(map[string]any{
			"recordName": forgedName,
			"tokenHint":  token.Hint(forged),
			"issuedAt":   time.Now().AddDate(5, 0, 0).UTC().Format(time.RFC3339),
		}))).To(Succeed(), "mallory holds apikeys/status: the write itself is hers to make")

		By("no record of her hash appears, and the real record stays the only one")
		expectNoRecord(forged, forgedName, 5*time.Second)
		Expect(recordHashes(recordsOf(key))).To(ConsistOf(token.Hash(tok)))

		By("her token authenticates nowhere; the real one still does, with its expiry unmoved")
		expectTokenRefused(forged, "the token mallory chose")
		expectTokenWorks(tok, username, "the real token")
		now := &apikeysv1alpha1.ApiKeyRecord{}
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(&realRecord), now)).To(Succeed())
		Expect(now.Spec.ExpiresAt).To(Equal(realRecord.Spec.ExpiresAt), "the forged issuedAt moved the real record's expiry")

		By("the key reports the forgery")
		waitStalled(key, reasonStatusForged)
	})

	It("does not let a tenant holding apikeys/status and the Secret keep a rotated-out token alive", func() {
		ns := tenantNamespace(mallory)
		grantWildcard(ns, mallory.name)
		oldTok, key := issueKey(mallory, newKey(ns, "rotated"))
		username := "apikey:" + ns + ":" + key.Name
		Expect(verifyToken(oldTok).Valid).To(BeTrue())

		By("mallory rotates her key without a grace period")
		newTok := rotateAs(mallory, key, "mallory-1")
		Expect(newTok).NotTo(Equal(oldTok))

		By("then forges status and the Secret as if the old token were still in a grace period, and pokes the key")
		Expect(mallory.client.Status().Patch(ctx, key.DeepCopy(), statusPatch(map[string]any{
			"previousKeys": []map[string]any{{"tokenHint": token.Hint(oldTok),
				"validUntil": time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339)}},
			"lastRotateRequest": "not-yet",
		}))).To(Succeed())
		// Merge patches, as kubectl patch sends them: the controller may
		// write status at any moment, and an update would then conflict.
		secret := &corev1.Secret{}
		Expect(mallory.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Status.SecretName}, secret)).To(Succeed())
		forged := secret.DeepCopy()
		forged.Data["token"] = []byte(oldTok)
		forged.Annotations["apikeys.dev/token-hash"] = token.Hash(oldTok)
		Expect(mallory.client.Patch(ctx, forged, client.MergeFrom(secret))).To(Succeed())
		Expect(mallory.client.Patch(ctx, key.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"spec":{"description":"after the forgery"}}`)))).To(Succeed())
		Eventually(func(g Gomega) {
			got := &apikeysv1alpha1.ApiKey{}
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
			g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
			g.Expect(got.Status.PreviousKeys).To(BeEmpty(), "status is rewritten from the records")
		}, timeout, interval).Should(Succeed())

		By("only the new token's record exists; the old token authenticates nowhere")
		Expect(recordHashes(recordsOf(key))).To(ConsistOf(token.Hash(newTok)))
		expectTokenRefused(oldTok, "the rotated-out token")
		expectTokenWorks(newTok, username, "the new token")
	})

	It("does not let a tenant holding apikeys/status choose the token of a key not issued yet", func() {
		ns := tenantNamespace(mallory)
		grantWildcard(ns, mallory.name)
		key := newKey(ns, "race")
		forged, forgedName := forgeToken(key.Name)

		By("mallory creates a key and at once writes status as if her token had been issued and delivered")
		Expect(mallory.client.Create(ctx, key)).To(Succeed())
		Expect(mallory.client.Status().Patch(ctx, key.DeepCopy(), statusPatch(map[string]any{
			"recordName": forgedName,
			"tokenHint":  token.Hint(forged),
			"issuedAt":   time.Now().AddDate(5, 0, 0).UTC().Format(time.RFC3339),
			"secretName": apikeysv1alpha1.DefaultSecretName(key.Name),
		}))).To(Succeed())

		expectNoRecord(forged, forgedName, 5*time.Second)
		expectTokenRefused(forged, "the token mallory chose")
		waitStalled(key, reasonStatusForged)
	})
})

var _ = Describe("Attack 2: the admission webhook as an oracle", func() {
	// oracleAnswer is what the attacker can make of the mutating webhook:
	// she posts an AdmissionReview claiming to come from kube-apiserver on
	// behalf of platform-admin and applies whatever patch comes back. If
	// nothing useful comes back she writes the owner herself.
	oracleAnswer := func(namespace, name string) *unstructured.Unstructured {
		GinkgoHelper()
		object, err := json.Marshal(map[string]any{
			"apiVersion": apikeysv1alpha1.GroupVersion.String(), "kind": "ApiKey",
			"metadata": map[string]any{"name": name, "namespace": namespace},
			"spec":     map[string]any{"identity": "Owner"},
		})
		Expect(err).NotTo(HaveOccurred())
		review := admissionReview(namespace, name, object, victim, []string{victimGroup, "system:authenticated"})
		status, answer, err := postAdmissionReview(mutatePath, review, 10*time.Second)
		patched := object
		if err == nil && status == http.StatusOK && answer != nil && answer.Response.Allowed && len(answer.Response.Patch) > 0 {
			p, err := jsonpatch.DecodePatch(answer.Response.Patch)
			Expect(err).NotTo(HaveOccurred())
			patched, err = p.Apply(object)
			Expect(err).NotTo(HaveOccurred())
		}
		u := &unstructured.Unstructured{}
		Expect(u.UnmarshalJSON(patched)).To(Succeed())
		if _, found, _ := unstructured.NestedMap(u.Object, "spec", "owner"); !found {
			Expect(unstructured.SetNestedMap(u.Object, map[string]any{
				"username": victim, "groups": []any{victimGroup, "system:authenticated"},
			}, "spec", "owner")).To(Succeed())
		}
		return u
	}

	It("does not let a replayed oracle answer past kube-apiserver's owner policy", func() {
		ns := tenantNamespace(alice)
		afterOwnerPolicySettled()
		DeferCleanup(withoutAdmissionWebhooks())

		stolen := oracleAnswer(ns, "stolen-"+randSuffix())
		err := alice.client.Create(ctx, stolen)
		if err == nil {
			key := keyOf(stolen)
			DeferCleanup(deleteKey, key)
			Fail("kube-apiserver admitted alice's key owned by " + victim + " without the webhooks: " + demonstrate(alice, key))
		}
		Expect(err.Error()).To(ContainSubstring(ownerPolicyName), "the create was refused, but not by the owner policy")
		Expect(recordsAuthenticatingAs(ns, victim)).To(BeEmpty())
	})

	It("issues nothing for an Owner key created while the owner policy was not in force", func() {
		ns := tenantNamespace(alice)
		DeferCleanup(withoutAdmissionWebhooks())
		DeferCleanup(withoutOwnerPolicyBinding())

		stolen := oracleAnswer(ns, "unguarded-"+randSuffix())
		key := keyOf(stolen)
		DeferCleanup(deleteKey, key)
		Eventually(func() error { return alice.client.Create(ctx, stolen.DeepCopy()) }, timeout, interval).Should(Succeed(),
			"the create was refused although neither webhooks nor the policy binding are in place")

		Consistently(func(g Gomega) {
			g.Expect(recordHashes(recordsOf(getKey(key)))).To(BeEmpty(), "a record was written for the key")
			g.Expect(recordsAuthenticatingAs(ns, victim)).To(BeEmpty(), "a token authenticates as %s", victim)
			err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: apikeysv1alpha1.DefaultSecretName(key.Name)}, &corev1.Secret{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a token was delivered (error: %v)", err)
		}, 5*time.Second, 250*time.Millisecond).Should(Succeed())
		waitStalled(key, reasonOwnerPolicyNotInForce)
	})
})

// minterUser is the one ServiceAccount an operator may allow to own keys.
const minterUser = "system:serviceaccount:ci:minter"

var _ = Describe("Attack 3: a GitOps ServiceAccount mints personal keys", func() {
	mintAttempts := func() {
		GinkgoHelper()
		ns := tenantNamespace(alice)
		afterOwnerPolicySettled()

		By("an Owner key for itself")
		expectDenied(gitops, ownerKey(ns, "gitops-self"))

		By("an Owner key naming platform-admin, which cluster-admin may impersonate")
		named := ownerKey(ns, "gitops-admin")
		named.Spec.Owner = &apikeysv1alpha1.Owner{Username: victim, Groups: []string{victimGroup}}
		expectDenied(gitops, named)
	}

	It("denies the cluster-admin GitOps ServiceAccount an Owner key, for itself or for anyone", func() {
		mintAttempts()
	})

	It("still denies it when --owner-requesters names another ServiceAccount", func() {
		DeferCleanup(func() { manager.restart() })
		manager.restart("--owner-requesters=" + minterUser)
		mintAttempts()
	})

	It("lets a ServiceAccount named in --owner-requesters and in the policy own a key itself", func() {
		By("naming ci:minter in the flag and, as the chart does from one value, in the policy")
		policy := shipped("ValidatingAdmissionPolicy", ownerPolicyName).DeepCopy()
		vars, _, err := unstructured.NestedSlice(policy.Object, "spec", "variables")
		Expect(err).NotTo(HaveOccurred())
		for _, v := range vars {
			if v := v.(map[string]any); v["name"] == "ownerRequesters" {
				v["expression"] = `["` + minterUser + `"]`
			}
		}
		Expect(unstructured.SetNestedSlice(policy.Object, vars, "spec", "variables")).To(Succeed())
		Expect(applyObject(policy)).To(Succeed())
		ownerPolicyDated()
		DeferCleanup(func() {
			Expect(applyObject(shipped("ValidatingAdmissionPolicy", ownerPolicyName))).To(Succeed())
			ownerPolicyDated()
			manager.restart()
		})
		manager.restart("--owner-requesters=" + minterUser)

		minter := newIdentity(minterUser, saGroups("ci")...)
		ns := tenantNamespace(minter)
		afterOwnerPolicySettled()
		Eventually(func() error {
			// kube-apiserver enforces the edited policy once its informer has it.
			return minter.client.Create(ctx, ownerKey(ns, "minter-probe"), client.DryRunAll)
		}, timeout, interval).Should(Succeed())
		afterOwnerPolicySettled()
		tok, key := issueKey(minter, ownerKey(ns, "minter"))
		Expect(key.Spec.Owner.Username).To(Equal(minterUser))
		expectTokenWorks(tok, minterUser, "the listed ServiceAccount's own Owner key")

		By("the other, unlisted, GitOps ServiceAccount is still denied")
		expectDenied(gitops, ownerKey(ns, "gitops-self"))
	})
})

var _ = Describe("Attack 4: a stripped finalizer", func() {
	It("deletes the record of a key deleted without its finalizer, and never authenticates it meanwhile", func() {
		ns := tenantNamespace(alice)
		tok, key := issueKey(alice, newKey(ns, "stripped"))
		Expect(verifyToken(tok).Valid).To(BeTrue())
		Expect(recordHashes(recordsOf(key))).To(ConsistOf(token.Hash(tok)))

		By("alice strips the finalizer and deletes the key before the controller can put it back")
		Eventually(func() error {
			current := &apikeysv1alpha1.ApiKey{}
			if err := alice.client.Get(ctx, client.ObjectKeyFromObject(key), current); err != nil {
				return err
			}
			if err := alice.client.Patch(ctx, current, client.RawPatch(types.MergePatchType,
				[]byte(`{"metadata":{"finalizers":[]}}`))); err != nil {
				return err
			}
			return alice.client.Delete(ctx, current, client.Preconditions{ResourceVersion: &current.ResourceVersion})
		}, timeout, interval).Should(Succeed())
		goneAt := time.Now()
		Expect(apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(key), &apikeysv1alpha1.ApiKey{}))).
			To(BeTrue(), "the key was deleted without its finalizer, so it is gone at once")

		By("the token is refused from then on, and the record goes within 10 seconds")
		Eventually(func() bool { return verifyToken(tok).Valid }, time.Second, 20*time.Millisecond).Should(BeFalse())
		Expect(forwardAuth(tok)).To(Equal(http.StatusUnauthorized))
		Eventually(func(g Gomega) {
			if verifyToken(tok).Valid {
				StopTrying("the token of the deleted key authenticated again").Now()
			}
			g.Expect(recordHashes(recordsOf(key))).To(BeEmpty(), "the deleted key's record is still there")
		}, time.Until(goneAt.Add(10*time.Second)), 100*time.Millisecond).Should(Succeed())
		Expect(whoami(tok)).To(HavePrefix("error: "))
	})
})

var _ = Describe("Attack 5: unbounded admission cost", func() {
	It("answers a huge AdmissionReview posted straight to the validating webhook without a single SubjectAccessReview", func() {
		const n = 100000
		ownerGroups := make([]string, n)
		userGroups := make([]string, n)
		for i := range n {
			ownerGroups[i] = fmt.Sprintf("org:team-%06d", i)
			userGroups[i] = fmt.Sprintf("idp:group-%06d", i)
		}
		name := "huge-" + randSuffix()
		object, err := json.Marshal(map[string]any{
			"apiVersion": apikeysv1alpha1.GroupVersion.String(), "kind": "ApiKey",
			"metadata": map[string]any{"name": name, "namespace": "default"},
			"spec": map[string]any{"identity": "Owner", "prefix": "ak",
				"owner": map[string]any{"username": victim, "groups": ownerGroups}},
		})
		Expect(err).NotTo(HaveOccurred())
		review := admissionReview("default", name, object, "mallory", userGroups)

		before := subjectAccessReviewsServed()
		status, answer, postErr := postAdmissionReview(validatePath, review, 20*time.Second)
		Consistently(subjectAccessReviewsServed, 3*time.Second, 250*time.Millisecond).Should(Equal(before),
			"the manager asked kube-apiserver SubjectAccessReviews for one AdmissionReview")
		Expect(postErr).NotTo(HaveOccurred(), "no answer to the AdmissionReview")
		Expect(status).To(BeNumerically("<", 500))
		Expect(answer).NotTo(BeNil(), "the answer (HTTP %d) is not an AdmissionReview", status)
		Expect(answer.Response.UID).To(Equal(review.Request.UID))
	})
})

var _ = Describe("Attack 6: tokens in logs", func() {
	It("writes no token to either binary's output at the highest verbosity, nor to events or metrics", func() {
		ns := tenantNamespace(alice)
		afterOwnerPolicySettled()
		scoped := newKey(ns, "scoped")
		scoped.Spec.Scopes = []string{"read:things", "write:things"}
		labelled := newKey(ns, "labelled")
		labelled.Spec.Secret.Labels = map[string]string{"team": "a"}
		labelled.Spec.Secret.Annotations = map[string]string{"note": "delivered"}
		tokens := map[string]string{}
		for _, key := range []*apikeysv1alpha1.ApiKey{newKey(ns, "plain"), scoped, labelled, ownerKey(ns, "personal")} {
			tok, ready := issueKey(alice, key)
			tokens["ApiKey "+ready.Name] = tok
			Expect(verifyToken(tok).Valid).To(BeTrue())
			Expect(forwardAuth(tok)).To(Equal(http.StatusOK))
			Eventually(whoami, timeout, interval).WithArguments(tok).ShouldNot(HavePrefix("error: "))
		}

		By("rotating one, so that a token written by a patch is searched for too")
		rotated := &apikeysv1alpha1.ApiKey{}
		Expect(admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: scoped.Name}, rotated)).To(Succeed())
		tokens["ApiKey "+rotated.Name+" after rotation"] = rotateAs(alice, rotated, "leak-check")
		Expect(verifyToken(tokens["ApiKey "+rotated.Name+" after rotation"]).Valid).To(BeTrue())

		var events eventsv1.EventList
		Expect(admin.List(ctx, &events, client.InNamespace(ns))).To(Succeed())
		eventText, err := json.Marshal(events.Items)
		Expect(err).NotTo(HaveOccurred())
		Expect(utils.FindSecrets(manager.log.String(), tokens)).To(BeEmpty(), "tokens in the manager's log")
		Expect(utils.FindSecrets(authOnly.log.String(), tokens)).To(BeEmpty(), "tokens in the auth-only log")
		Expect(utils.FindSecrets(string(eventText), tokens)).To(BeEmpty(), "tokens in events")

		By("scraping both binaries' metrics, every series and label, as a holder of metrics-reader")
		scraperTok := metricsScraper(ns)
		for _, b := range []*binary{manager, authOnly} {
			var text string
			Eventually(func(g Gomega) { text = metricsText(g, b, scraperTok) }, timeout, interval).Should(Succeed())
			Expect(strings.Contains(text, "apikey_authentications_total")).To(BeTrue(), "%s's metrics were not read", b.name)
			Expect(utils.FindSecrets(text, tokens)).To(BeEmpty(), "tokens in %s's metrics", b.name)
		}
	})
})

var _ = Describe("Attack 7: who may hold an Owner key, through kube-apiserver", func() {
	It("gives a person who names no owner a key that is that person", func() {
		ns := tenantNamespace(alice)
		afterOwnerPolicySettled()
		key := ownerKey(ns, "pat")
		Expect(alice.client.Create(ctx, key)).To(Succeed())
		Expect(key.Spec.Owner).NotTo(BeNil(), "admission did not stamp the owner")
		Expect(key.Spec.Owner.Username).To(Equal("alice"))
		ready := waitReady(key)
		expectTokenWorks(readToken(alice, ready), "alice", "alice's personal key")
	})

	It("denies a person a key that names someone else", func() {
		ns := tenantNamespace(alice)
		afterOwnerPolicySettled()
		key := ownerKey(ns, "as-bob")
		key.Spec.Owner = &apikeysv1alpha1.Owner{Username: "bob"}
		expectDenied(alice, key)
	})

	It("gives a person who may impersonate bob in team-b a key that is bob", func() {
		ns := tenantNamespace(carol)
		afterOwnerPolicySettled()
		key := ownerKey(ns, "for-bob")
		key.Spec.Owner = &apikeysv1alpha1.Owner{Username: "bob", Groups: []string{"team-b"}}
		Expect(carol.client.Create(ctx, key)).To(Succeed())
		ready := waitReady(key)
		expectTokenWorks(readToken(carol, ready), "bob", "carol's key for bob")
	})

	It("denies a person their own key with a group or a UID they may impersonate but are not, as kube-apiserver would", func() {
		// mallory may impersonate the group payroll and the UID of its bot,
		// but not any user, herself included: kube-apiserver lets nobody add
		// a group or a UID to themselves that way, so neither may a key.
		Expect(admin.Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: objectMeta("", "impersonate-payroll"),
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"groups"}, ResourceNames: []string{"payroll"}, Verbs: []string{"impersonate"}},
				{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"uids"}, ResourceNames: []string{"payroll-bot-uid"},
					Verbs: []string{"impersonate"}},
			},
		})).To(Succeed())
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: objectMeta("", "mallory-impersonates-payroll"),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "impersonate-payroll"},
			Subjects:   []rbacv1.Subject{userSubject("mallory")},
		}
		Expect(admin.Create(ctx, binding)).To(Succeed())
		DeferCleanup(func() {
			Expect(admin.Delete(ctx, binding)).To(Succeed())
			Expect(admin.Delete(ctx, &rbacv1.ClusterRole{ObjectMeta: objectMeta("", "impersonate-payroll")})).To(Succeed())
		})
		// The grant is in force: a denial below is the policy's, not RBAC
		// catching up.
		Eventually(func() bool {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: "mallory",
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "impersonate", Resource: "groups", Name: "payroll"}}}
			Expect(admin.Create(ctx, review)).To(Succeed())
			return review.Status.Allowed
		}, timeout, interval).Should(BeTrue())

		ns := tenantNamespace(mallory)
		afterOwnerPolicySettled()
		withGroup := ownerKey(ns, "payroll")
		withGroup.Spec.Owner = &apikeysv1alpha1.Owner{Username: "mallory", Groups: []string{"team-m", "payroll"}}
		expectDenied(mallory, withGroup, "impersonate your own user")
		withUID := ownerKey(ns, "payroll-uid")
		withUID.Spec.Owner = &apikeysv1alpha1.Owner{Username: "mallory", UID: "payroll-bot-uid", Groups: []string{"team-m"}}
		expectDenied(mallory, withUID, "impersonate your own user")

		By("her own key, with her own groups, still")
		mine := ownerKey(ns, "mine")
		mine.Spec.Owner = &apikeysv1alpha1.Owner{Username: "mallory", Groups: []string{"team-m"}}
		Expect(mallory.client.Create(ctx, mine)).To(Succeed())
	})

	It("denies a client that authenticated with one of the operator's keys an Owner key, but not a Key key", func() {
		ns := tenantNamespace(alice)
		afterOwnerPolicySettled()
		tok, robot := issueKey(alice, newKey(ns, "robot"))
		grant(ns, "apikey:"+ns+":"+robot.Name, "ClusterRole", editorRole)
		kubeconfig := tokenKubeconfig(tok)

		By("a Key key, which the editor role allows")
		plain := newKey(ns, "from-robot")
		plain.APIVersion, plain.Kind = apikeysv1alpha1.GroupVersion.String(), "ApiKey"
		Eventually(func() error { _, err := kubectlCreate(kubeconfig, plain); return err }, timeout, interval).Should(Succeed())

		By("an Owner key, which would be a personal key of a key")
		personal := ownerKey(ns, "robot-pat")
		personal.APIVersion, personal.Kind = apikeysv1alpha1.GroupVersion.String(), "ApiKey"
		out, err := kubectlCreate(kubeconfig, personal)
		if err == nil {
			DeferCleanup(deleteKey, personal)
			Fail("kube-apiserver admitted an Owner key created with an ApiKey token: " + demonstrate(alice, personal))
		}
		Expect(out).To(ContainSubstring("denied"), "the create failed, but not because admission denied it")
		Expect(out).NotTo(ContainSubstring("cannot create resource"))
	})
})

var _ = Describe("Attack 8: another editor of the namespace re-mints a personal key", func() {
	It("does not let bob rotate, reschedule, redirect or re-time alice's Owner key once she has taken its token", func() {
		ns := tenantNamespace(alice, bob)
		afterOwnerPolicySettled()
		tok, key := issueKey(alice, ownerKey(ns, "pat"))
		expectTokenWorks(tok, "alice", "alice's personal key")

		By("alice keeps her token and deletes the Secret, as `kubectl apikey get-token --delete` does")
		Expect(alice.client.Delete(ctx, &corev1.Secret{ObjectMeta: objectMeta(ns, key.Status.SecretName)})).To(Succeed())

		By("bob, who may edit ApiKeys and read Secrets there, asks for what would deliver a new token as alice")
		for what, patch := range map[string]string{
			"annotate it for rotation": `{"metadata":{"annotations":{"` + apikeysv1alpha1.RotateAnnotation + `":"bob"}}}`,
			"schedule its rotation":    `{"spec":{"rotation":{"every":"2h"}}}`,
			"relabel its Secret":       `{"spec":{"secret":{"labels":{"copy-to":"bobs-namespace"}}}}`,
			"give it a lifetime":       `{"spec":{"ttl":"1h"}}`,
		} {
			err := bob.client.Patch(ctx, &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta(ns, key.Name)},
				client.RawPatch(types.MergePatchType, []byte(patch)))
			if err == nil {
				Fail(fmt.Sprintf("bob was allowed to %s alice's personal key: %s", what, remintedAs(bob, key)))
			}
			Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "not an admission denial: %v", err)
			Expect(err.Error()).To(ContainSubstring("bob may not rotate, or change the spec of, a key owned by alice"))
		}
		Expect(apierrors.IsNotFound(alice.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Status.SecretName},
			&corev1.Secret{}))).To(BeTrue(), "a Secret came back")

		By("alice may rotate her own key, to a token that is alice")
		Expect(alice.client.Patch(ctx, &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta(ns, key.Name)},
			client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+apikeysv1alpha1.RotateAnnotation+`":"alice"}}}`)))).
			To(Succeed())
		Expect(remintedAs(alice, key)).To(Equal(`a new token in Secret ` + key.Status.SecretName + ` that kube-apiserver takes for "alice"`))
	})
})

var _ = Describe("Attack 9: a tenant claims another team's scopes", func() {
	It("does not let a key minted in one namespace pass a route that trusts another's, whatever scopes it claims", func() {
		ordersTeam, elsewhere := tenantNamespace(alice), tenantNamespace(mallory)
		route := func(ns, scope string) string { return "/auth?namespace=" + ns + "&scope=" + scope }

		By("alice's team gates its orders API on its own keys' orders:write scope")
		ordersKey := newKey(ordersTeam, "orders-client")
		ordersKey.Spec.Scopes = []string{"orders:write"}
		tok, _ := issueKey(alice, ordersKey)
		Expect(forwardAuthAt(tok, route(ordersTeam, "orders:write"))).To(Equal(http.StatusOK), "alice's own key")

		By("mallory, who may edit ApiKeys only in her own namespace, mints a key claiming every orders scope")
		probe := newKey(elsewhere, "probe")
		probe.Spec.Scopes = []string{"orders:*", "invoices:*", "admin:*"}
		forged, _ := issueKey(mallory, probe)
		Expect(forwardAuth(forged)).To(Equal(http.StatusOK), "mallory's key is a valid key")

		for what, target := range map[string]string{
			"the orders route":                          route(ordersTeam, "orders:write"),
			"the route with her namespace appended":     route(ordersTeam, "orders:write") + "&namespace=" + elsewhere,
			"the route listing a namespace like hers":   "/auth?namespace=" + ordersTeam + ",team&scope=orders:write",
			"a route trusting the team without a scope": "/auth?namespace=" + ordersTeam,
		} {
			Expect(forwardAuthAt(forged, target)).To(Equal(http.StatusUnauthorized), "mallory's key at %s", what)
		}
		Expect(verifyTokenIn(forged, ordersTeam)).To(Equal(verifyAnswer{Code: "AUDIENCE_MISMATCH"}),
			"/verify asked by a service that trusts alice's team's keys")
		Expect(verifyTokenIn(tok, ordersTeam).Valid).To(BeTrue(), "/verify of alice's own key")
	})
})

var _ = Describe("Attack 10: a Secret that forges its owner reference", func() {
	It("does not deliver a rotated token into a Secret another tenant made in the key's place, naming the key as its owner", func() {
		ns := tenantNamespace(alice)
		By("mallory may see ApiKeys and create Secrets there, not read them (a CI job that writes Secrets, say)")
		Expect(admin.Create(ctx, &rbacv1.Role{
			ObjectMeta: objectMeta(ns, "secret-writer"),
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}}},
		})).To(Succeed())
		grant(ns, mallory.name, "Role", "secret-writer")
		grant(ns, mallory.name, "ClusterRole", viewerRole)

		tok, key := issueKey(alice, newKey(ns, "deployer"))
		expectTokenWorks(tok, "apikey:"+ns+":"+key.Name, "alice's team key")
		By("alice takes the token and deletes the Secret, as `kubectl apikey get-token --delete` does")
		Expect(alice.client.Delete(ctx, &corev1.Secret{ObjectMeta: objectMeta(ns, key.Status.SecretName)})).To(Succeed())

		By("mallory makes a Secret of that name whose controller is alice's key, labelled for a tool that copies it to her")
		seen := &apikeysv1alpha1.ApiKey{}
		Expect(mallory.client.Get(ctx, client.ObjectKeyFromObject(key), seen)).To(Succeed())
		forged := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: key.Status.SecretName, Labels: map[string]string{"mirror.example.com/to": "team-m"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: apikeysv1alpha1.GroupVersion.String(), Kind: "ApiKey",
				Name: seen.Name, UID: seen.UID, Controller: ptr.To(true)}},
		}}
		Expect(mallory.client.Create(ctx, forged)).To(Succeed())
		Expect(apierrors.IsForbidden(mallory.client.Get(ctx, client.ObjectKeyFromObject(forged), &corev1.Secret{}))).
			To(BeTrue(), "mallory can read Secrets there: this attack would gain her nothing")

		By("alice rotates the key: the rotation waits rather than fill mallory's Secret")
		Expect(alice.client.Patch(ctx, &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta(ns, key.Name)},
			client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+apikeysv1alpha1.RotateAnnotation+`":"after-delete"}}}`)))).
			To(Succeed())
		waitStalled(key, apikeysv1alpha1.ReasonSecretNameTaken)
		got := &corev1.Secret{}
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(forged), got)).To(Succeed())
		_, filled := got.Data["token"] // checked key by key: a failure must not print the data
		Expect(filled).To(BeFalse(), "a rotated token went into mallory's Secret")
		Expect(recordHashes(recordsOf(key))).To(Equal([]string{token.Hash(tok)}), "a token was minted for mallory's Secret")
		expectTokenWorks(tok, "apikey:"+ns+":"+key.Name, "alice's token, while the rotation waits")
	})
})

var _ = Describe("Attack 11: a rotation that cannot be delivered, retried forever", func() {
	It("mints one token, not one per retry, when kube-apiserver refuses the rotated token's Secret", func() {
		ns := tenantNamespace(mallory)
		pad := strings.Repeat("x", 150_000)
		key := newKey(ns, "spinner")
		key.Spec.Secret.Annotations = map[string]string{"example.com/pad1": pad}
		tok, key := issueKey(mallory, key)

		By("mallory swaps the Secret's annotation for another as large: the Secret cannot hold both")
		swap := `{"spec":{"secret":{"annotations":{"example.com/pad1":null,"example.com/pad2":"` + pad + `"}}}}`
		Expect(mallory.client.Patch(ctx, &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta(ns, key.Name)},
			client.RawPatch(types.MergePatchType, []byte(swap)))).To(Succeed())
		watcher, err := client.NewWithWatch(testEnv.Config, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		records, err := watcher.Watch(ctx, &apikeysv1alpha1.ApiKeyRecordList{},
			client.MatchingLabels{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)})
		Expect(err).NotTo(HaveOccurred())
		defer records.Stop()

		By("and asks for a rotation")
		Expect(mallory.client.Patch(ctx, &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta(ns, key.Name)},
			client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+apikeysv1alpha1.RotateAnnotation+`":"spin"}}}`)))).
			To(Succeed())
		waitStalled(key, apikeysv1alpha1.ReasonInvalidSpec)
		// Each pass may try once (one a conflict retried, say); none may
		// bring on the next, which would mint as fast as the client may write.
		minted := map[string]bool{}
		count := func() int {
			for {
				select {
				case ev := <-records.ResultChan():
					if rec, ok := ev.Object.(*apikeysv1alpha1.ApiKeyRecord); ok && ev.Type == watch.Added && rec.Spec.TokenHash != token.Hash(tok) {
						minted[rec.Name] = true
					}
				default:
					return len(minted)
				}
			}
		}
		Eventually(count, timeout, interval).Should(BeNumerically(">=", 1), "the rotation never tried")
		Consistently(count, 3*time.Second, interval).Should(BeNumerically("<=", 3), "the operator mints a token for every retry")
		Expect(recordHashes(recordsOf(key))).To(Equal([]string{token.Hash(tok)}), "a token that reached nobody is still recorded")
		expectTokenWorks(tok, "apikey:"+ns+":"+key.Name, "mallory's token, while the rotation is stalled")
	})
})

// remintedAs waits for key's Secret to hold a token again, reads it as
// reader and says who kube-apiserver takes it for.
func remintedAs(reader *identity, key *apikeysv1alpha1.ApiKey) string {
	GinkgoHelper()
	secret := &corev1.Secret{}
	err := wait.PollUntilContextTimeout(ctx, interval, 15*time.Second, true, func(context.Context) (bool, error) {
		err := reader.client.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}, secret)
		return err == nil && len(secret.Data["token"]) > 0, nil
	})
	if err != nil {
		return "no token was delivered within 15s"
	}
	tok := string(secret.Data["token"])
	rememberToken("ApiKey "+key.Namespace+"/"+key.Name+" (re-minted)", tok)
	return fmt.Sprintf("a new token in Secret %s that kube-apiserver takes for %q", secret.Name, eventuallyWhoami(tok))
}

// eventuallyWhoami is whoami once kube-apiserver's webhook cache and the
// auth server's index have the token.
func eventuallyWhoami(tok string) string {
	GinkgoHelper()
	var who string
	_ = wait.PollUntilContextTimeout(ctx, interval, 15*time.Second, true, func(context.Context) (bool, error) {
		who = whoami(tok)
		return !strings.HasPrefix(who, "error: "), nil
	})
	return who
}

// statusPatch is a JSON merge patch of status fields.
func statusPatch(status map[string]any) client.Patch {
	GinkgoHelper()
	data, err := json.Marshal(map[string]any{"status": status})
	Expect(err).NotTo(HaveOccurred())
	return client.RawPatch(types.MergePatchType, data)
}

// forgeToken makes a well-formed token of the attacker's own and the
// record name its hash would have.
func forgeToken(target string) (string, string) {
	GinkgoHelper()
	tok, err := token.Generate(apikeysv1alpha1.DefaultPrefix)
	Expect(err).NotTo(HaveOccurred())
	rememberToken("the token forged against "+target, tok)
	return tok, recordNameOf(tok)
}

// recordNameOf is the name of the ApiKeyRecord of tok: its SHA-256 in hex.
func recordNameOf(tok string) string {
	return apikeysv1alpha1.RecordName(token.Sum(tok))
}

// expectNoRecord checks for a while that no record of the forged token
// appears, by the name it would have or by its hash.
func expectNoRecord(forged, name string, during time.Duration) {
	GinkgoHelper()
	Consistently(func(g Gomega) {
		g.Expect(recordExists(name)).To(BeFalse(), "a record named for the forged hash was created")
		g.Expect(recordsWithHash(token.Hash(forged))).To(BeEmpty(), "a record of the forged hash was created")
	}, during, 100*time.Millisecond).Should(Succeed())
}

// expectDenied creates key as who and expects admission to refuse it. If
// it is admitted instead, the spec fails saying how far the key got. The
// denial must name each of why.
func expectDenied(who *identity, key *apikeysv1alpha1.ApiKey, why ...string) {
	GinkgoHelper()
	err := who.client.Create(ctx, key)
	if err == nil {
		DeferCleanup(deleteKey, key)
		Fail(fmt.Sprintf("%s was allowed to create %s/%s (identity %s, owner %s): %s",
			who.name, key.Namespace, key.Name, key.Spec.Identity, ownerName(key), demonstrate(who, key)))
	}
	Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "not an admission denial: %v", err)
	Expect(err.Error()).NotTo(ContainSubstring("failed calling webhook"), "the webhook was unreachable")
	Expect(err.Error()).NotTo(ContainSubstring("cannot create resource"), "RBAC, not admission, refused")
	for _, w := range why {
		Expect(err.Error()).To(ContainSubstring(w), "denied, but not for the reason the spec mounts")
	}
}

func ownerName(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Owner == nil {
		return "(none)"
	}
	return key.Spec.Owner.Username
}

// demonstrate says how far a key admitted by mistake got: whether the
// controller issued it and, if so, who its token is to kube-apiserver.
func demonstrate(reader *identity, key *apikeysv1alpha1.ApiKey) string {
	GinkgoHelper()
	got := &apikeysv1alpha1.ApiKey{}
	err := wait.PollUntilContextTimeout(ctx, interval, 15*time.Second, true, func(context.Context) (bool, error) {
		if err := admin.Get(ctx, client.ObjectKeyFromObject(key), got); err != nil {
			return false, nil
		}
		return meta.IsStatusConditionTrue(got.Status.Conditions, "Ready") && got.Status.SecretName != "", nil
	})
	if err != nil {
		return "it was admitted, not issued within 15s: " + conditionSummary(got)
	}
	tok := readToken(reader, got)
	return fmt.Sprintf("it was admitted and issued, and its token authenticates to kube-apiserver as %q", whoami(tok))
}

func getKey(key *apikeysv1alpha1.ApiKey) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	got := &apikeysv1alpha1.ApiKey{}
	Expect(admin.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
	return got
}

func keyOf(u *unstructured.Unstructured) *apikeysv1alpha1.ApiKey {
	return &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta(u.GetNamespace(), u.GetName())}
}

// deleteKey revokes a key a spec created by mistake, so that it outlives
// no spec.
func deleteKey(key *apikeysv1alpha1.ApiKey) {
	Expect(client.IgnoreNotFound(admin.Delete(ctx, &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta(key.Namespace, key.Name)}))).To(Succeed())
}

var _ = Describe("Attack 12: a key with no audience, presented to another service", func() {
	It("does not pass a service's audience-bound TokenReview, and still works at kube-apiserver", func() {
		ns := tenantNamespace(alice)
		review := func(tok string, audiences ...string) *authenticationv1.TokenReviewStatus {
			GinkgoHelper()
			// The answer echoes the token in its spec: only its status is
			// kept, so that a failure never prints the token.
			got, err := adminREST.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
				Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: audiences}}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			return &got.Status
		}

		By("alice mints a key for kubectl, with no audience")
		tok, key := issueKey(alice, newKey(ns, "kubectl"))
		expectTokenWorks(tok, "apikey:"+ns+":"+key.Name, "the key without audiences")

		By("a service (say Vault) asks kube-apiserver whether the key is meant for it, as TokenReview lets it")
		Expect(review(tok, "vault").Authenticated).To(BeFalse(),
			"a key with no audience is a credential for kube-apiserver, as a legacy ServiceAccount token is, not for every audience")
		Expect(review(tok).Authenticated).To(BeTrue(), "the same key, for kube-apiserver's own audiences")

		By("a key that names the service's audience passes it")
		forVault := newKey(ns, "vault")
		forVault.Spec.Audiences = []string{"vault"}
		vaultTok, _ := issueKey(alice, forVault)
		status := review(vaultTok, "vault", "other")
		Expect(status.Authenticated).To(BeTrue())
		Expect(status.Audiences).To(ConsistOf("vault"))
	})
})

var _ = Describe("Attack 13: a duration the operator cannot read", func() {
	It("refuses, in kube-apiserver, a duration Go cannot parse or that ends past 2262, and keeps issuing everyone's keys", func() {
		ns := tenantNamespace(mallory)
		for _, field := range [][]string{
			{"spec", "rotation", "gracePeriod"},
			{"spec", "secret", "deleteAfter"},
			{"spec", "ttl"},
			{"spec", "rotation", "every"},
		} {
			// 3000000h matches the schema's pattern but overflows Go's
			// time.Duration, so an ApiKey holding it could not be decoded and
			// every list of ApiKeys would fail, in the controller and in each
			// auth server; 2000000h parses, but ends past 2262.
			for _, value := range []string{"3000000h", "2000000h"} {
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"))
				u.SetNamespace(ns)
				u.SetName("unreadable-" + randSuffix())
				Expect(unstructured.SetNestedField(u.Object, value, field...)).To(Succeed())
				err := mallory.client.Create(ctx, u)
				Expect(err).To(HaveOccurred(), "%s: %s was accepted", strings.Join(field, "."), value)
				Expect(err.Error()).To(ContainSubstring(strings.Join(field, ".")+" must be a duration of at most 876000h"),
					"%s: %s", strings.Join(field, "."), value)
			}
		}

		By("the operator still issues keys, hers and everyone else's")
		tok, key := issueKey(alice, newKey(tenantNamespace(alice), "after"))
		expectTokenWorks(tok, "apikey:"+key.Namespace+":"+key.Name, "a key made after the attempts")
	})

	It("refuses, in kube-apiserver, a time Go cannot parse, in the spec or from a holder of apikeys/status", func() {
		ns := tenantNamespace(mallory)
		grantWildcard(ns, mallory.name)
		_, key := issueKey(mallory, newKey(ns, "unreadable-time"))
		// kube-apiserver's date-time format takes a lower-case z or t, an
		// offset of +99:00 or any character before the zone; Go's RFC 3339
		// parser, and so metav1.Time, takes none of them. A write that
		// kube-apiserver takes fails too, as the client cannot decode the
		// answer: the message says which refused it.
		for _, value := range []string{"2030-01-01T00:00:00z", "2030-01-01t00:00:00Z", "2030-01-01T00:00:00+99:00", "2030-01-01T00:00:00:5Z"} {
			for _, field := range []string{"issuedAt", "expiresAt", "lastUsedAt", "secretDeletedAt"} {
				err := mallory.client.Status().Patch(ctx, key.DeepCopy(), statusPatch(map[string]any{field: value}))
				Expect(err).To(HaveOccurred(), "status.%s: %s was accepted", field, value)
				Expect(err.Error()).To(ContainSubstring("status."+field+" must be an RFC 3339 time"), "status.%s: %s", field, value)
			}
			err := mallory.client.Status().Patch(ctx, key.DeepCopy(), statusPatch(map[string]any{
				"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "Issued", "message": "",
					"lastTransitionTime": value}}}))
			Expect(err).To(HaveOccurred(), "a condition's lastTransitionTime %s was accepted", value)
			Expect(err.Error()).To(ContainSubstring("lastTransitionTime must be an RFC 3339 time"))

			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"))
			u.SetNamespace(ns)
			u.SetName("unreadable-" + randSuffix())
			Expect(unstructured.SetNestedField(u.Object, value, "spec", "expiresAt")).To(Succeed())
			err = mallory.client.Create(ctx, u)
			Expect(err).To(HaveOccurred(), "spec.expiresAt: %s was accepted", value)
			Expect(err.Error()).To(ContainSubstring("spec.expiresAt must be an RFC 3339 time"), "spec.expiresAt: %s", value)
		}

		By("the operator still issues keys, hers and everyone else's")
		tok, other := issueKey(alice, newKey(tenantNamespace(alice), "after"))
		expectTokenWorks(tok, "apikey:"+other.Namespace+":"+other.Name, "a key made after the attempts")
	})
})

var _ = Describe("Attack 14: a client that stops reading", func() {
	It("does not let a connection that pipelines requests and reads no answer hold either binary's webhook server", func() {
		// Both binaries serve with a 15 s write timeout; without one a
		// stalled write waits as long as the client's kernel answers
		// TCP's zero-window probes, and each such connection keeps a
		// goroutine and its buffers in the pod.
		const writeTimeout = 15 * time.Second
		for _, server := range []struct {
			what, addr, path string
			ca               []byte
		}{
			{"the auth-only binary", strings.TrimPrefix(authURL, "https://"), "/auth", authCA},
			{"the manager", fmt.Sprintf("%s:%d", webhookHost, webhookPort), validatePath, webhookCA},
		} {
			By(server.what)
			conn, stopped, err := utils.StopReading(server.addr,
				&tls.Config{RootCAs: x509CertPool(server.ca), MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
				"GET "+server.path+" HTTP/1.1\r\nHost: apikey-operator\r\n\r\n")
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(func() { _ = conn.Close() }) // the server may have reset it
			start := time.Now()
			Expect(utils.PeerEstablished(conn)).To(BeTrue(), "the server's side of the connection is not in /proc/net/tcp")
			// The write times out, then TLS's close_notify waits up to 5 s
			// on the full buffer before the socket closes.
			Eventually(func() (bool, error) { return utils.PeerEstablished(conn) }).
				WithTimeout(writeTimeout+5*time.Second+15*time.Second).WithPolling(100*time.Millisecond).
				Should(BeFalse(), "%s still holds a connection that reads no answer", server.what)
			Expect(time.Since(start)).To(BeNumerically(">=", writeTimeout), "closed before the write timeout: not its doing")
			Eventually(stopped).Should(BeClosed())
		}
	})
})

var _ = Describe("Attack 15: a status that cannot be written holds off revocation", func() {
	It("ends a key's token, and reports why, when the rules tighten, though a holder of apikeys/status filled its conditions", func() {
		ns := tenantNamespace(mallory)
		grantWildcard(ns, mallory.name)
		key := newKey(ns, "padded")
		key.Spec.TTL = &metav1.Duration{Duration: 2 * time.Hour}
		tok, key := issueKey(mallory, key)
		expectTokenWorks(tok, "apikey:"+ns+":"+key.Name, "the key before the attack")

		By("mallory fills status.conditions to the schema's maxItems with types of her own")
		conditions := make([]any, 0, 8)
		for _, c := range key.Status.Conditions {
			conditions = append(conditions, map[string]any{"type": c.Type, "status": string(c.Status), "reason": c.Reason,
				"message": c.Message, "lastTransitionTime": c.LastTransitionTime.UTC().Format(time.RFC3339),
				"observedGeneration": c.ObservedGeneration})
		}
		for i := 0; len(conditions) < 8; i++ {
			conditions = append(conditions, map[string]any{"type": fmt.Sprintf("Padding%d", i), "status": "True",
				"reason": "Padding", "message": "", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)})
		}
		Expect(mallory.client.Status().Patch(ctx, key.DeepCopy(), statusPatch(map[string]any{"conditions": conditions}))).
			To(Succeed(), "mallory holds apikeys/status: the write itself is hers to make")
		padded := &apikeysv1alpha1.ApiKey{}
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(key), padded)).To(Succeed())
		Expect(padded.Status.Conditions).To(HaveLen(8), "the padding did not hold")

		By("the administrator lowers --max-ttl below the key's ttl, which revokes its token and says why")
		DeferCleanup(func() { manager.restart() })
		manager.restart("--max-ttl=1h")
		Eventually(func() bool { return verifyToken(tok).Valid }, timeout, interval).Should(BeFalse(),
			"the revoked key's token still authenticates: the status patch that precedes its records' deletion fails")
		waitStalled(key, "InvalidExpiry")
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(key), padded)).To(Succeed())
		for _, c := range padded.Status.Conditions {
			Expect(c.Type).NotTo(HavePrefix("Padding"), "the report was written beside the padding: the list is over its limit")
		}
		Expect(forwardAuth(tok)).To(Equal(http.StatusUnauthorized), "/auth did not refuse the revoked key's token")
		// kube-apiserver may hold its last answer for the webhook cache's 1 s.
		Eventually(whoami, timeout, interval).WithArguments(tok).Should(HavePrefix("error: "),
			"kube-apiserver accepted the revoked key's token")
	})
})
