//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond

	// graceMargin is how long before a superseded token's validUntil a probe
	// must start for the spec to insist that it is accepted: one kubectl or
	// HTTP round trip, with room to spare.
	graceMargin = 500 * time.Millisecond
)

func metaName(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

func newNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// createReadyKey applies key and waits until the controller has delivered
// its token, which it returns (never printed).
func createReadyKey(key *apikeysv1alpha1.ApiKey) (string, *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	if key.Name == "" {
		key.Name = "key-" + rand.String(6)
	}
	Expect(k8sClient.Create(ctx, key)).To(Succeed())
	return awaitReady(key)
}

// awaitReady waits until the controller has delivered the token of key,
// which exists, and returns it (never printed) and the Ready key.
func awaitReady(key *apikeysv1alpha1.ApiKey) (string, *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	got := &apikeysv1alpha1.ApiKey{}
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, "Ready")).To(BeTrue())
	}, timeout, interval).Should(Succeed())
	return readToken(got), got
}

func readToken(key *apikeysv1alpha1.ApiKey) string {
	GinkgoHelper()
	secret := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}, secret)).To(Succeed())
	tok := string(secret.Data["token"])
	Expect(tok).NotTo(BeEmpty())
	return tok
}

// rotate sets key's apikeys.dev/rotate annotation to request and waits until
// status reports that request acted on. It returns the rotated key and the
// token its Secret now holds, after checking (by hint, so that no failure
// message can carry a token) that this is a new token and the one status names.
func rotate(key *apikeysv1alpha1.ApiKey, request string) (string, *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	oldHint := key.Status.TokenHint
	patch := client.MergeFrom(key.DeepCopy())
	if key.Annotations == nil {
		key.Annotations = map[string]string{}
	}
	key.Annotations[apikeysv1alpha1.RotateAnnotation] = request
	Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())
	got := &apikeysv1alpha1.ApiKey{}
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), got)).To(Succeed())
		g.Expect(got.Status.LastRotateRequest).To(Equal(request))
	}, timeout, interval).Should(Succeed())
	tok := readToken(got)
	Expect(token.Hint(tok)).To(Equal(got.Status.TokenHint), "the Secret holds the token status names")
	Expect(got.Status.TokenHint).NotTo(Equal(oldHint), "status names a new token")
	return tok, got
}

// previousKeyUntil is when status says oldTok, superseded by a rotation,
// stops working.
func previousKeyUntil(key *apikeysv1alpha1.ApiKey, oldTok string) time.Time {
	GinkgoHelper()
	Expect(key.Status.PreviousKeys).To(HaveLen(1))
	prev := key.Status.PreviousKeys[0]
	Expect(prev.TokenHint).To(Equal(token.Hint(oldTok)))
	return prev.ValidUntil.Time
}

// lateness is how a client treated a superseded token after its validUntil:
// the last probe sent after that instant and still accepted (0 if none), and
// the answer of the first refused one.
type lateness struct{ lastAccepted, refused time.Duration }

func (l lateness) String() string {
	accepted := "no probe sent after validUntil was accepted"
	if l.lastAccepted > 0 {
		accepted = fmt.Sprintf("the last accepted probe was sent %s after validUntil", l.lastAccepted.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s; the first refusal was answered %s after it", accepted, l.refused.Round(time.Millisecond))
}

// awaitRefusal probes a superseded token until the client refuses it. It
// fails the spec if a probe answered before validUntil is refused (the grace
// period was cut short), or if the token is still accepted bound after
// validUntil.
func awaitRefusal(validUntil time.Time, bound time.Duration, accepted func() bool) lateness {
	GinkgoHelper()
	var l lateness
	Eventually(func() bool {
		sent := time.Now()
		ok := accepted()
		answered := time.Now()
		if ok {
			if sent.After(validUntil) {
				l.lastAccepted = sent.Sub(validUntil)
			}
			return false
		}
		if answered.Before(validUntil) {
			StopTrying(fmt.Sprintf("refused %s before validUntil, inside the grace period",
				validUntil.Sub(answered).Round(time.Millisecond))).Now()
		}
		l.refused = answered.Sub(validUntil)
		return true
	}).WithTimeout(time.Until(validUntil)+bound).WithPolling(interval).Should(BeTrue(),
		"the superseded token is still accepted %s after its validUntil", bound)
	Expect(l.refused).To(BeNumerically("<=", bound))
	return l
}

func setSuspended(key *apikeysv1alpha1.ApiKey, suspended bool) {
	GinkgoHelper()
	patch := client.MergeFrom(key.DeepCopy())
	key.Spec.Suspended = suspended
	Expect(k8sClient.Patch(ctx, key, patch)).To(Succeed())
}

// userKubeconfig writes a kubeconfig that authenticates to host with tok.
func userKubeconfig(host string, caData []byte, tok string) string {
	GinkgoHelper()
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, []byte(utils.TokenKubeconfig(host, caData, tok)), 0o600)).To(Succeed())
	return path
}

// kubectl runs the kubectl built by `make envtest`; see utils.Kubectl.
func kubectl(kubeconfig string, args ...string) (string, string, error) {
	return utils.Kubectl(kubectlPath, kubeconfig, args...)
}

// whoami is `kubectl auth whoami`'s username, or kubectl's error output.
func whoami(kubeconfig string) string { return utils.Whoami(kubectlPath, kubeconfig) }

// authHTTPClient trusts the auth server's CA.
func authHTTPClient() *http.Client {
	ca, err := os.ReadFile(authCAFile)
	Expect(err).NotTo(HaveOccurred())
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(ca)).To(BeTrue())
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// forwardAuth asks the auth server's /auth about tok and returns the status.
func forwardAuth(tok, query string) int {
	GinkgoHelper()
	req, err := http.NewRequest(http.MethodGet, authURL+"/auth"+query, nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := authHTTPClient().Do(req)
	Expect(err).NotTo(HaveOccurred())
	_ = resp.Body.Close()
	return resp.StatusCode
}
