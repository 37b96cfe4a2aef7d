//go:build e2e

package security

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

const (
	timeout  = 30 * time.Second
	interval = 100 * time.Millisecond
	// recordFinalizer is the finalizer the controller puts on every ApiKey.
	// Reasons the fixed controller reports.
	reasonStatusForged          = "StatusForged"
	reasonOwnerPolicyNotInForce = "OwnerPolicyNotInForce"
)

func objectMeta(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}

func userSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: "User", Name: name}
}

func serviceAccountSubject(namespace, name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: "ServiceAccount", Namespace: namespace, Name: name}
}

func x509CertPool(ca []byte) *x509.CertPool {
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(ca)).To(BeTrue())
	return pool
}

// tenantNamespace creates a namespace where each tenant holds what the
// shipped roles give a tenant (ApiKeys, read-only status) plus the Secrets
// its tokens arrive in.
func tenantNamespace(tenants ...*identity) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "sec-"}}
	Expect(admin.Create(ctx, ns)).To(Succeed())
	Expect(admin.Create(ctx, &rbacv1.Role{
		ObjectMeta: objectMeta(ns.Name, "token-secrets"),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"},
			Verbs: []string{"get", "list", "create", "update", "patch", "delete"}}},
	})).To(Succeed())
	for _, t := range tenants {
		grant(ns.Name, t.name, "ClusterRole", editorRole)
		grant(ns.Name, t.name, "ClusterRole", viewerRole)
		grant(ns.Name, t.name, "Role", "token-secrets")
	}
	return ns.Name
}

// grantWildcard gives user `*` on apikeys.dev in namespace, apikeys/status
// included: the broad namespaced role many platforms hand a team.
func grantWildcard(namespace, user string) {
	GinkgoHelper()
	Expect(admin.Create(ctx, &rbacv1.Role{
		ObjectMeta: objectMeta(namespace, "apikeys-wildcard"),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{apikeysv1alpha1.GroupVersion.Group},
			Resources: []string{"*", "apikeys/status"}, Verbs: []string{"*"}}},
	})).To(Succeed())
	grant(namespace, user, "Role", "apikeys-wildcard")
}

// grant binds user to a role in namespace.
func grant(namespace, user, kind, role string) {
	GinkgoHelper()
	Expect(admin.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "grant-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role},
		Subjects:   []rbacv1.Subject{userSubject(user)},
	})).To(Succeed())
}

// newKey is an ApiKey in namespace with a fresh name.
func newKey(namespace, prefix string) *apikeysv1alpha1.ApiKey {
	return &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta(namespace, prefix+"-"+rand.String(5))}
}

func ownerKey(namespace, prefix string) *apikeysv1alpha1.ApiKey {
	key := newKey(namespace, prefix)
	key.Spec.Identity = apikeysv1alpha1.IdentityOwner
	return key
}

// ownerPolicyDated waits until kube-controller-manager has written the
// owner policy's status for its current generation, which dates a policy
// changed in place for the operator, and starts ownerPolicyEpoch then.
func ownerPolicyDated() {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		policy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
		g.Expect(admin.Get(ctx, client.ObjectKey{Name: ownerPolicyName}, policy)).To(Succeed())
		g.Expect(policy.Status.ObservedGeneration).To(Equal(policy.Generation),
			"kube-controller-manager has not written the owner policy's status (is it running?)")
	}, timeout, interval).Should(Succeed())
	ownerPolicyEpoch = time.Now()
}

// afterOwnerPolicySettled waits until the owner policy has been in force
// for over a second: the controller issues an Owner key only if the policy
// was in force from before the key's creation, at a second's resolution.
func afterOwnerPolicySettled() {
	Eventually(func() bool { return time.Since(ownerPolicyEpoch) > 1500*time.Millisecond }, 5*time.Second, interval).
		Should(BeTrue())
}

// issueKey creates key as the tenant, waits until it is Ready and reads its
// token from the Secret as the tenant.
func issueKey(as *identity, key *apikeysv1alpha1.ApiKey) (string, *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	Expect(as.client.Create(ctx, key)).To(Succeed())
	ready := waitReady(key)
	return readToken(as, ready), ready
}

// waitReady waits until key is Ready and returns it.
func waitReady(key *apikeysv1alpha1.ApiKey) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	got := &apikeysv1alpha1.ApiKey{}
	Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, "Ready")).To(BeTrue(),
			"ApiKey %s/%s is not Ready: %s", key.Namespace, key.Name, conditionSummary(got))
		g.Expect(got.Status.SecretName).NotTo(BeEmpty())
	}, timeout, interval).Should(Succeed())
	return got
}

// waitStalled waits until key has Stalled=True with reason.
func waitStalled(key *apikeysv1alpha1.ApiKey, reason string) {
	GinkgoHelper()
	got := &apikeysv1alpha1.ApiKey{}
	Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		stalled := meta.FindStatusCondition(got.Status.Conditions, "Stalled")
		g.Expect(stalled).NotTo(BeNil(), "ApiKey %s/%s is not Stalled: %s", key.Namespace, key.Name, conditionSummary(got))
		g.Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(stalled.Reason).To(Equal(reason))
	}, timeout, interval).Should(Succeed())
}

// conditionSummary lists a key's conditions as type=status(reason).
func conditionSummary(key *apikeysv1alpha1.ApiKey) string {
	parts := make([]string, 0, len(key.Status.Conditions))
	for _, c := range key.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Reason))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// readToken reads key's token from its Secret as the tenant would, and
// remembers it for the leak check. It is never printed.
func readToken(as *identity, key *apikeysv1alpha1.ApiKey) string {
	GinkgoHelper()
	secret := &corev1.Secret{}
	Expect(as.client.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}, secret)).To(Succeed())
	tok := string(secret.Data["token"])
	Expect(tok).NotTo(BeEmpty(), "the Secret of %s/%s holds no token", key.Namespace, key.Name)
	rememberToken("ApiKey "+key.Namespace+"/"+key.Name, tok)
	return tok
}

// rotateAs sets key's rotate annotation to value as the tenant, waits until
// the key's one live record answers that request, and returns the new token
// read from the Secret (remembered for the leak check, never printed).
func rotateAs(as *identity, key *apikeysv1alpha1.ApiKey, value string) string {
	GinkgoHelper()
	cur := &apikeysv1alpha1.ApiKey{}
	Expect(as.client.Get(ctx, client.ObjectKeyFromObject(key), cur)).To(Succeed())
	patch := client.MergeFrom(cur.DeepCopy())
	if cur.Annotations == nil {
		cur.Annotations = map[string]string{}
	}
	cur.Annotations[apikeysv1alpha1.RotateAnnotation] = value
	Expect(as.client.Patch(ctx, cur, patch)).To(Succeed())
	var live apikeysv1alpha1.ApiKeyRecord
	Eventually(func(g Gomega) {
		records := recordsOf(key)
		g.Expect(records).To(HaveLen(1))
		g.Expect(records[0].Spec.RotateRequest).To(Equal(value))
		live = records[0]
	}, timeout, interval).Should(Succeed())
	secret := &corev1.Secret{}
	Eventually(func(g Gomega) {
		g.Expect(as.client.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: live.Spec.SecretName}, secret)).To(Succeed())
		g.Expect(secret.Annotations).To(HaveKeyWithValue("apikeys.dev/token-hash", live.Spec.TokenHash))
	}, timeout, interval).Should(Succeed())
	tok := string(secret.Data["token"])
	rememberToken("ApiKey "+key.Namespace+"/"+key.Name+" rotated to "+value, tok)
	return tok
}

// recordsOf lists the ApiKeyRecords labelled with an ApiKey's UID.
func recordsOf(key *apikeysv1alpha1.ApiKey) []apikeysv1alpha1.ApiKeyRecord {
	GinkgoHelper()
	var records apikeysv1alpha1.ApiKeyRecordList
	Expect(admin.List(ctx, &records, client.MatchingLabels{apikeysv1alpha1.ApiKeyUIDLabel: string(key.UID)})).To(Succeed())
	return records.Items
}

// recordHashes are the token hashes records hold (hashes are no secret).
func recordHashes(records []apikeysv1alpha1.ApiKeyRecord) []string {
	hashes := make([]string, 0, len(records))
	for _, r := range records {
		hashes = append(hashes, r.Spec.TokenHash)
	}
	return hashes
}

// recordsWithHash lists the names of the records, cluster-wide, that hold
// tokenHash.
func recordsWithHash(tokenHash string) []string {
	GinkgoHelper()
	var records apikeysv1alpha1.ApiKeyRecordList
	Expect(admin.List(ctx, &records)).To(Succeed())
	var names []string
	for _, r := range records.Items {
		if r.Spec.TokenHash == tokenHash {
			names = append(names, r.Name)
		}
	}
	return names
}

func randSuffix() string { return rand.String(5) }

// recordExists reports whether an ApiKeyRecord of that name exists.
func recordExists(name string) bool {
	GinkgoHelper()
	err := admin.Get(ctx, client.ObjectKey{Name: name}, &apikeysv1alpha1.ApiKeyRecord{})
	if apierrors.IsNotFound(err) {
		return false
	}
	Expect(err).NotTo(HaveOccurred())
	return true
}

// recordsAuthenticatingAs lists the records of keys in namespace whose
// token authenticates as username.
func recordsAuthenticatingAs(namespace, username string) []string {
	GinkgoHelper()
	var records apikeysv1alpha1.ApiKeyRecordList
	Expect(admin.List(ctx, &records)).To(Succeed())
	var names []string
	for _, r := range records.Items {
		if r.Spec.ApiKey.Namespace == namespace && r.Spec.Username == username {
			names = append(names, r.Name)
		}
	}
	return names
}

// verifyAnswer is the part of /verify's answer the specs look at.
type verifyAnswer struct {
	Valid    bool   `json:"valid"`
	Code     string `json:"code"`
	Username string `json:"username"`
}

// verifyToken asks the auth-only binary's /verify about tok.
func verifyToken(tok string) verifyAnswer {
	GinkgoHelper()
	return verifyTokenIn(tok)
}

// verifyTokenIn asks the auth-only binary's /verify about tok as a service
// that accepts keys from namespaces only (any, if none).
func verifyTokenIn(tok string, namespaces ...string) verifyAnswer {
	GinkgoHelper()
	body, err := json.Marshal(map[string]any{"token": tok, "namespaces": namespaces})
	Expect(err).NotTo(HaveOccurred())
	resp, err := httpsClient(authCA, 5*time.Second).Post(authURL+"/verify", "application/json", bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	Expect(resp.StatusCode).To(Equal(http.StatusOK), "/verify answered %d", resp.StatusCode)
	var answer verifyAnswer
	Expect(json.NewDecoder(resp.Body).Decode(&answer)).To(Succeed())
	return answer
}

// forwardAuth asks the auth-only binary's /auth about tok and returns the status.
func forwardAuth(tok string) int {
	GinkgoHelper()
	return forwardAuthAt(tok, "/auth")
}

// forwardAuthAt asks the auth-only binary about tok at target (a path and
// query, as a proxy's route sends it) and returns the status.
func forwardAuthAt(tok, target string) int {
	GinkgoHelper()
	req, err := http.NewRequest(http.MethodGet, authURL+target, nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := httpsClient(authCA, 5*time.Second).Do(req)
	Expect(err).NotTo(HaveOccurred())
	_ = resp.Body.Close()
	return resp.StatusCode
}

// whoami is `kubectl auth whoami` with tok, through kube-apiserver's token
// webhook: the username, or "error: " and kubectl's complaint.
func whoami(tok string) string {
	GinkgoHelper()
	return utils.Whoami(kubectlPath, tokenKubeconfig(tok))
}

// tokenKubeconfig writes a 0600 kubeconfig that authenticates with tok.
func tokenKubeconfig(tok string) string {
	GinkgoHelper()
	cfg := testEnv.Config
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, []byte(utils.TokenKubeconfig(cfg.Host, cfg.CAData, tok)), 0o600)).To(Succeed())
	return path
}

// kubectl runs the kubectl built by `make envtest`; see utils.Kubectl.
func kubectl(kubeconfig string, args ...string) (string, string, error) {
	return utils.Kubectl(kubectlPath, kubeconfig, args...)
}

// kubectlCreate creates obj (JSON) with kubectl as whoever kubeconfig is.
func kubectlCreate(kubeconfig string, obj any) (string, error) {
	GinkgoHelper()
	manifest, err := json.Marshal(obj)
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(GinkgoT().TempDir(), "object.json")
	Expect(os.WriteFile(path, manifest, 0o600)).To(Succeed())
	out, errOut, err := kubectl(kubeconfig, "create", "-f", path)
	if err != nil {
		return errOut, err
	}
	return out, nil
}

// expectTokenRefused checks that tok authenticates nowhere: /verify,
// forward-auth and kube-apiserver.
func expectTokenRefused(tok, what string) {
	GinkgoHelper()
	Expect(verifyToken(tok).Valid).To(BeFalse(), "/verify accepted %s", what)
	Expect(forwardAuth(tok)).To(Equal(http.StatusUnauthorized), "/auth did not refuse %s", what)
	Expect(whoami(tok)).To(HavePrefix("error: "), "kube-apiserver accepted %s", what)
}

// expectTokenWorks checks that tok authenticates as username at /verify,
// forward-auth and kube-apiserver.
func expectTokenWorks(tok, username, what string) {
	GinkgoHelper()
	answer := verifyToken(tok)
	Expect(answer.Valid).To(BeTrue(), "/verify refused %s: %s", what, answer.Code)
	Expect(answer.Username).To(Equal(username))
	Expect(forwardAuth(tok)).To(Equal(http.StatusOK), "/auth refused %s", what)
	Eventually(whoami, timeout, interval).WithArguments(tok).Should(Equal(username), "kube-apiserver on %s", what)
}

// postAdmissionReview sends review straight to the manager's webhook
// server at path, as any pod in the cluster can, and returns the HTTP
// status and the decoded answer (nil if it is not an AdmissionReview).
func postAdmissionReview(
	path string, review *admissionv1.AdmissionReview, patience time.Duration,
) (int, *admissionv1.AdmissionReview, error) {
	GinkgoHelper()
	body, err := json.Marshal(review)
	Expect(err).NotTo(HaveOccurred())
	url := fmt.Sprintf("https://%s:%d%s", webhookHost, webhookPort, path)
	resp, err := httpsClient(webhookCA, patience).Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	answer := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(raw, answer); err != nil || answer.Response == nil {
		return resp.StatusCode, nil, nil
	}
	return resp.StatusCode, answer, nil
}

// admissionReview is a CREATE of object (JSON) in namespace by user, as
// kube-apiserver would send it.
func admissionReview(namespace, name string, object []byte, user string, groups []string) *admissionv1.AdmissionReview {
	gvk := metav1.GroupVersionKind{Group: apikeysv1alpha1.GroupVersion.Group, Version: "v1alpha1", Kind: "ApiKey"}
	gvr := metav1.GroupVersionResource{Group: apikeysv1alpha1.GroupVersion.Group, Version: "v1alpha1", Resource: "apikeys"}
	review := &admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{
		UID:             uuid.NewUUID(),
		Kind:            gvk,
		Resource:        gvr,
		RequestKind:     &gvk,
		RequestResource: &gvr,
		Name:            name,
		Namespace:       namespace,
		Operation:       admissionv1.Create,
		Object:          runtime.RawExtension{Raw: object},
	}}
	review.APIVersion, review.Kind = "admission.k8s.io/v1", "AdmissionReview"
	review.Request.UserInfo.Username = user
	review.Request.UserInfo.Groups = groups
	return review
}

// subjectAccessReviewsServed is how many SubjectAccessReviews kube-apiserver
// has answered, from its own metrics.
func subjectAccessReviewsServed() float64 {
	GinkgoHelper()
	raw, err := adminREST.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	Expect(err).NotTo(HaveOccurred())
	var total float64
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `resource="subjectaccessreviews"`) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		Expect(err).NotTo(HaveOccurred())
		total += v
	}
	Expect(sc.Err()).NotTo(HaveOccurred())
	return total
}

// withoutAdmissionWebhooks deletes the webhook configurations envtest
// installed, as a broken release or a careless admin might, waits until
// kube-apiserver no longer calls them, and returns what puts them back.
func withoutAdmissionWebhooks() (restore func()) {
	GinkgoHelper()
	var mutating admissionregistrationv1.MutatingWebhookConfigurationList
	var validating admissionregistrationv1.ValidatingWebhookConfigurationList
	Expect(admin.List(ctx, &mutating)).To(Succeed())
	Expect(admin.List(ctx, &validating)).To(Succeed())
	for i := range mutating.Items {
		Expect(admin.Delete(ctx, &mutating.Items[i])).To(Succeed())
	}
	for i := range validating.Items {
		Expect(admin.Delete(ctx, &validating.Items[i])).To(Succeed())
	}
	Eventually(webhooksInEffect, timeout, interval).Should(Equal([2]bool{false, false}))
	return func() {
		GinkgoHelper()
		for i := range mutating.Items {
			obj := mutating.Items[i].DeepCopy()
			obj.ObjectMeta = metav1.ObjectMeta{Name: obj.Name, Labels: obj.Labels, Annotations: obj.Annotations}
			Expect(admin.Create(ctx, obj)).To(Succeed())
		}
		for i := range validating.Items {
			obj := validating.Items[i].DeepCopy()
			obj.ObjectMeta = metav1.ObjectMeta{Name: obj.Name, Labels: obj.Labels, Annotations: obj.Annotations}
			Expect(admin.Create(ctx, obj)).To(Succeed())
		}
		Eventually(webhooksInEffect, timeout, interval).Should(Equal([2]bool{true, true}))
		probe := &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta("default", "webhook-probe")}
		Expect(client.IgnoreNotFound(admin.Delete(ctx, probe))).To(Succeed())
	}
}

// webhooksInEffect probes, with server-side dry runs by the cluster admin,
// whether kube-apiserver calls the mutating webhook (it puts back an owner
// an update dropped; without it the CRD refuses the update) and the
// validating one (it refuses a ttl beyond the manager's --max-ttl of 24h,
// which nothing else knows).
func webhooksInEffect(g Gomega) [2]bool {
	probe := webhookProbeKey(g)
	dropped := probe.DeepCopy()
	dropped.Spec.Owner = nil
	err := admin.Update(ctx, dropped, client.DryRunAll)
	if err != nil {
		// A conflict with the controller's writes says nothing: try again.
		g.Expect(err.Error()).To(ContainSubstring("cannot be added or removed"))
	}
	mutating := err == nil && dropped.Spec.Owner != nil

	long := newKey("default", "probe")
	long.Spec.TTL = &metav1.Duration{Duration: 48 * time.Hour}
	err = admin.Create(ctx, long, client.DryRunAll)
	return [2]bool{mutating, err != nil}
}

// webhookProbeKey is the ApiKey webhooksInEffect updates (in dry runs
// only), created with its owner on first use.
func webhookProbeKey(g Gomega) *apikeysv1alpha1.ApiKey {
	key := &apikeysv1alpha1.ApiKey{ObjectMeta: objectMeta("default", "webhook-probe")}
	err := admin.Get(ctx, client.ObjectKeyFromObject(key), key)
	if apierrors.IsNotFound(err) {
		err = admin.Create(ctx, key)
	}
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(key.Spec.Owner).NotTo(BeNil(), "the defaults policy stamps the owner")
	return key
}

// withoutOwnerPolicyBinding deletes the owner policy's binding, as a broken
// release might, and returns what puts it back. Without a binding in
// config/ there is nothing to delete, and nothing to put back.
func withoutOwnerPolicyBinding() (restore func()) {
	GinkgoHelper()
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	err := admin.Get(ctx, client.ObjectKey{Name: ownerPolicyBindingName}, binding)
	if apierrors.IsNotFound(err) {
		return func() {}
	}
	Expect(err).NotTo(HaveOccurred())
	Expect(admin.Delete(ctx, binding)).To(Succeed())
	return func() {
		GinkgoHelper()
		Expect(applyObject(shipped("ValidatingAdmissionPolicyBinding", ownerPolicyBindingName))).To(Succeed())
		ownerPolicyEpoch = time.Now()
	}
}
