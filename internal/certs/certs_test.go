package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
	webhookv1alpha1 "github.com/apikey-operator/apikey-operator/internal/webhook/v1alpha1"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

const (
	operatorNamespace = "apikey-operator-system"
	keyNamespace      = "team-a"
)

// TestSelfSignedMode starts from nothing (no Secrets, empty certificate
// directories, webhook configurations whose CA bundle trusts nothing we
// serve) and checks that the operator issues the CA and the certificate into
// two Secrets, the CA's key never in the serving one, injects its CA, and
// that kube-apiserver then reaches the real admission webhook over TLS; that
// a replica which only reads, and may read nothing but the serving Secret,
// stays unready and closed until that Secret exists, then serves the same
// certificate; that a lost Secret or a lost CA bundle is put back; and that
// an issuer finding the old one-Secret layout, where the CA's key sat beside
// the serving key, replaces that CA and stops trusting it.
func TestSelfSignedMode(t *testing.T) {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(60 * time.Second)
	g.SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	logs := &utils.LogBuffer{}
	testenv.Log(logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})

	scheme := testenv.Scheme
	testEnv, admin, err := testenv.Start(testenv.Options{Webhooks: true})
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { g.Expect(testEnv.Stop()).To(Succeed()) })
	cfg := testEnv.Config
	ctx := t.Context()

	for _, ns := range []string{operatorNamespace, keyNamespace} {
		g.Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	}
	// envtest points the configurations at its own CA; with a bundle that
	// trusts nothing, only our injection can make the webhooks answer.
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
	mutating.Name = "mutating-webhook-configuration"
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	validating.Name = "validating-webhook-configuration"
	untrusted := []byte("trusts nothing")
	setCABundles(g, admin, mutating, untrusted)
	setCABundles(g, admin, validating, untrusted)

	served := &testEnv.WebhookInstallOptions
	opts := Options{
		Namespace:                      operatorNamespace,
		SecretName:                     "apikey-operator-webhook-server-cert",
		CASecretName:                   "apikey-operator-webhook-ca",
		Service:                        "apikey-operator-webhook-service",
		ExtraHosts:                     []string{served.LocalServingHost},
		MutatingWebhookConfiguration:   mutating.Name,
		ValidatingWebhookConfiguration: validating.Name,
	}
	secretKey, caSecretKey := opts.secretKey(), opts.caSecretKey()

	t.Log("starting a replica that only reads, as the auth server alone runs, allowed to read the serving Secret only")
	readerCfg := userAllowedToRead(g, testEnv, admin, "auth-server", secretKey)
	readerClient, err := client.New(readerCfg, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	readerOpts := opts
	readerOpts.CertDir = t.TempDir()
	readerPort := mustFreePort(g)
	reader := startManager(t, readerCfg, scheme, readerOpts, served.LocalServingHost, readerPort, nil)
	g.Eventually(reader.readyz).Should(Equal(http.StatusInternalServerError))
	g.Consistently(func(g Gomega) {
		g.Expect(reader.readyz()).To(Equal(http.StatusInternalServerError))
		_, err := net.DialTimeout("tcp", net.JoinHostPort(served.LocalServingHost, strconv.Itoa(readerPort)), time.Second)
		g.Expect(err).To(HaveOccurred(), "the webhook server listens without a certificate")
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(admin.Get(ctx, secretKey, &corev1.Secret{})).NotTo(Succeed(), "a reader must not issue")
	g.Expect(admin.Get(ctx, caSecretKey, &corev1.Secret{})).NotTo(Succeed(), "a reader must not issue")

	t.Log("starting the replica that issues, with the real admission webhooks")
	issuerOpts := opts
	issuerOpts.CertDir = t.TempDir()
	issuerOpts.Issue = true
	leader := startManager(t, cfg, scheme, issuerOpts, served.LocalServingHost, served.LocalServingPort, func(mgr ctrl.Manager) error {
		return webhookv1alpha1.SetupApiKeyWebhookWithManager(mgr, policy.New(policy.Options{MaxTTL: 24 * time.Hour}))
	})

	secret, caSecret := &corev1.Secret{}, &corev1.Secret{}
	g.Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, caSecretKey, caSecret)).To(Succeed())
		g.Expect(admin.Get(ctx, secretKey, secret)).To(Succeed())
	}).Should(Succeed())
	checkLayout(g, caSecret, secret)
	g.Expect(apierrors.IsForbidden(readerClient.Get(ctx, caSecretKey, &corev1.Secret{}))).To(BeTrue(),
		"the reading replica's identity may read the CA Secret, so the test proves nothing")
	g.Eventually(caBundlesOf(admin, mutating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))
	g.Eventually(caBundlesOf(admin, validating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))
	g.Eventually(leader.readyz).Should(Equal(http.StatusOK))
	g.Expect(os.ReadFile(filepath.Join(issuerOpts.CertDir, "tls.crt"))).To(Equal(secret.Data[corev1.TLSCertKey]))

	t.Log("creating an ApiKey through kube-apiserver, which calls the validating webhook over TLS")
	expectWebhookAnswers(g, admin)

	t.Log("checking the reading replica now serves the same certificate")
	g.Eventually(reader.readyz).Should(Equal(http.StatusOK))
	g.Expect(servedCertificate(g, secret.Data[caBundleKey], served.LocalServingHost, readerPort)).To(Equal(secret.Data[corev1.TLSCertKey]))

	t.Log("deleting the serving Secret: a new certificate from the same CA is issued and served by both replicas")
	first, firstCA := secret.DeepCopy(), caSecret.DeepCopy()
	g.Expect(admin.Delete(ctx, secret)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, secretKey, secret)).To(Succeed())
		g.Expect(secret.UID).NotTo(Equal(first.UID))
	}).Should(Succeed())
	g.Expect(admin.Get(ctx, caSecretKey, caSecret)).To(Succeed())
	g.Expect(caSecret.UID).To(Equal(firstCA.UID))
	checkLayout(g, caSecret, secret)
	g.Expect(secret.Data[corev1.TLSCertKey]).NotTo(Equal(first.Data[corev1.TLSCertKey]))
	for _, port := range []int{served.LocalServingPort, readerPort} {
		g.Eventually(func() []byte {
			return servedCertificate(g, secret.Data[caBundleKey], served.LocalServingHost, port)
		}).Should(Equal(secret.Data[corev1.TLSCertKey]))
	}
	renewed := secret.DeepCopy()

	t.Log("deleting the CA Secret: a new CA is issued, injected and served by both replicas")
	g.Expect(admin.Delete(ctx, caSecret)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, caSecretKey, caSecret)).To(Succeed())
		g.Expect(caSecret.UID).NotTo(Equal(firstCA.UID))
		g.Expect(admin.Get(ctx, secretKey, secret)).To(Succeed())
		g.Expect(secret.Data[corev1.TLSCertKey]).NotTo(Equal(renewed.Data[corev1.TLSCertKey]))
	}).Should(Succeed())
	g.Expect(secret.UID).To(Equal(renewed.UID), "the serving Secret was deleted and made again, not rewritten in place")
	checkLayout(g, caSecret, secret)
	g.Expect(secret.Data[caBundleKey]).NotTo(Equal(first.Data[caBundleKey]))
	g.Eventually(caBundlesOf(admin, mutating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))
	g.Eventually(caBundlesOf(admin, validating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))
	for _, port := range []int{served.LocalServingPort, readerPort} {
		g.Eventually(func() []byte {
			return servedCertificate(g, secret.Data[caBundleKey], served.LocalServingHost, port)
		}).Should(Equal(secret.Data[corev1.TLSCertKey]))
	}
	expectWebhookAnswers(g, admin)

	t.Log("applying a configuration again without its CA bundle: the bundle comes back")
	setCABundles(g, admin, validating, nil)
	g.Eventually(caBundlesOf(admin, validating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))

	t.Log("starting an issuer upgraded from the one-Secret layout: it replaces the CA whose key every serving pod could read")
	upgraded := opts
	upgraded.SecretName, upgraded.CASecretName = "old-layout-webhook-server-cert", "old-layout-webhook-ca"
	upgraded.MutatingWebhookConfiguration, upgraded.ValidatingWebhookConfiguration = "", ""
	upgraded.CertDir, upgraded.Issue = t.TempDir(), true
	upgraded, err = upgraded.withDefaults()
	g.Expect(err).NotTo(HaveOccurred())
	issued, err := renew(nil, nil, upgraded.hosts(), upgraded.lifetimes(), time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	oldLayout := secrets{}.after(issued).oldLayout().serving
	// Immutable, as a policy engine may make every Secret: it cannot be
	// rewritten in place.
	oldSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: upgraded.SecretName},
		Type:       corev1.SecretTypeTLS,
		Data:       oldLayout,
		Immutable:  ptr.To(true),
	}
	g.Expect(admin.Create(ctx, oldSecret)).To(Succeed())
	upgradedReplica := startManager(t, cfg, scheme, upgraded, served.LocalServingHost, mustFreePort(g), nil)
	newCA, rewritten := &corev1.Secret{}, &corev1.Secret{}
	g.Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, upgraded.caSecretKey(), newCA)).To(Succeed())
		g.Expect(admin.Get(ctx, upgraded.secretKey(), rewritten)).To(Succeed())
		_, holdsCAKey := rewritten.Data[caKeyKey] // a failure must not print the keys
		g.Expect(holdsCAKey).To(BeFalse())
	}).Should(Succeed())
	checkLayout(g, newCA, rewritten)
	g.Expect(newCA.Data[caKeyKey]).NotTo(Equal(oldLayout[caKeyKey]), "the CA whose key was in the serving Secret still signs")
	g.Expect(bytes.Contains(rewritten.Data[caBundleKey], oldLayout[caBundleKey])).To(BeFalse(), "the exposed CA is still trusted")
	g.Expect(rewritten.Data[corev1.TLSCertKey]).NotTo(Equal(oldLayout[corev1.TLSCertKey]), "a certificate of the exposed CA is still served")
	g.Expect(rewritten.UID).NotTo(Equal(oldSecret.UID), "an immutable serving Secret was not replaced")
	g.Eventually(upgradedReplica.readyz).Should(Equal(http.StatusOK))

	t.Log("checking no private key reached the logs")
	for _, k := range []struct {
		data map[string][]byte
		key  string
	}{
		{firstCA.Data, caKeyKey}, {caSecret.Data, caKeyKey}, {oldLayout, caKeyKey},
		{first.Data, corev1.TLSPrivateKeyKey}, {renewed.Data, corev1.TLSPrivateKeyKey}, {secret.Data, corev1.TLSPrivateKeyKey},
	} {
		block, _ := pem.Decode(k.data[k.key])
		g.Expect(block).NotTo(BeNil())
		g.Expect(logs.String()).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString(block.Bytes)[40:80]))
		g.Expect(logs.String()).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString(k.data[k.key])[60:100]))
	}
}

// checkLayout checks that the serving Secret holds the certificate, its key
// and the CA bundle but never the CA's key, and that the CA Secret holds the
// CA that signed the certificate, with its key.
func checkLayout(g *WithT, caSecret, serving *corev1.Secret) {
	g.Expect(serving.Type).To(Equal(corev1.SecretTypeTLS))
	g.Expect(serving.Data).To(HaveKey(caBundleKey))
	g.Expect(serving.Data).NotTo(HaveKey(caKeyKey), "the serving Secret, which replicas that only serve read, holds the CA's key")
	ca, err := parseCA(caSecret.Data[caBundleKey], caSecret.Data[caKeyKey])
	g.Expect(err).NotTo(HaveOccurred(), "the CA Secret holds no CA")
	g.Expect(bytes.Contains(serving.Data[caBundleKey], ca.certPEM)).To(BeTrue(), "the serving Secret's bundle lacks the CA")
	block, _ := pem.Decode(serving.Data[corev1.TLSCertKey])
	g.Expect(block).NotTo(BeNil())
	cert, err := x509.ParseCertificate(block.Bytes)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cert.CheckSignatureFrom(ca.cert)).To(Succeed(), "the CA Secret's CA did not sign the serving certificate")
}

// userAllowedToRead returns the config of a new user who may get, list and
// watch the Secret at key and nothing else, as the auth-only Deployment's
// Role allows.
func userAllowedToRead(g *WithT, env *envtest.Environment, admin client.Client, name string, key client.ObjectKey) *rest.Config {
	ctx := context.Background()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: name},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{key.Name},
			Verbs: []string{"get", "list", "watch"},
		}},
	}
	g.Expect(admin.Create(ctx, role)).To(Succeed())
	g.Expect(admin.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}},
	})).To(Succeed())
	user, err := env.AddUser(envtest.User{Name: name}, nil)
	g.Expect(err).NotTo(HaveOccurred())
	return user.Config()
}

// replica is a running manager as main builds it in self-signed mode.
type replica struct{ probeAddr string }

func (r replica) readyz() int {
	resp, err := http.Get("http://" + r.probeAddr + "/readyz")
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// startManager runs a manager serving webhooks on host:port with the
// certificate from Setup(o), stopped when the test ends.
func startManager(t *testing.T, cfg *rest.Config, scheme *runtime.Scheme, o Options, host string, port int,
	addWebhooks func(ctrl.Manager) error) replica {
	t.Helper()
	g := NewWithT(t)
	r := replica{probeAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(mustFreePort(g)))}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: r.probeAddr,
		WebhookServer:          NewWebhookServer(webhook.Options{Host: host, Port: port, CertDir: o.CertDir}),
		// Two managers in one process register the same controllers.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	g.Expect(err).NotTo(HaveOccurred())
	installed, err := Setup(mgr, o)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(mgr.AddReadyzCheck("webhook-cert", ReadyzCheck(installed))).To(Succeed())
	if addWebhooks != nil {
		g.Expect(addWebhooks(mgr)).To(Succeed())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return r
}

// expectWebhookAnswers creates an ApiKey with a ttl beyond the webhooks'
// --max-ttl of 24h: only the validating webhook's answer names that flag,
// so the refusal shows kube-apiserver reached it over TLS.
func expectWebhookAnswers(g *WithT, c client.Client) {
	g.Eventually(func(g Gomega) {
		key := &apikeysv1alpha1.ApiKey{}
		key.Namespace, key.GenerateName = keyNamespace, "probe-"
		key.Spec.TTL = &metav1.Duration{Duration: 48 * time.Hour}
		err := c.Create(context.Background(), key)
		g.Expect(err).To(HaveOccurred())
		g.Expect(err.Error()).To(ContainSubstring("--max-ttl"), "the validating webhook answers")
	}).Should(Succeed())
}

func setCABundles(g *WithT, c client.Client, config client.Object, caBundle []byte) {
	g.Expect(c.Get(context.Background(), client.ObjectKeyFromObject(config), config)).To(Succeed())
	for _, bundle := range caBundles(config) {
		*bundle = caBundle
	}
	g.Expect(c.Update(context.Background(), config)).To(Succeed())
}

func caBundlesOf(c client.Client, config client.Object) func(Gomega) [][]byte {
	return func(g Gomega) [][]byte {
		g.Expect(c.Get(context.Background(), client.ObjectKeyFromObject(config), config)).To(Succeed())
		bundles := caBundles(config)
		out := make([][]byte, 0, len(bundles))
		for _, bundle := range bundles {
			out = append(out, *bundle)
		}
		g.Expect(out).NotTo(BeEmpty())
		return out
	}
}

// servedCertificate dials host:port trusting only caBundle and returns the
// certificate served, in PEM; nil if the handshake fails.
func servedCertificate(g *WithT, caBundle []byte, host string, port int) []byte {
	roots := x509.NewCertPool()
	g.Expect(roots.AppendCertsFromPEM(caBundle)).To(BeTrue())
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp",
		net.JoinHostPort(host, strconv.Itoa(port)), &tls.Config{RootCAs: roots})
	if err != nil {
		return nil
	}
	defer func() { _ = conn.Close() }()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: conn.ConnectionState().PeerCertificates[0].Raw})
}

func mustFreePort(g *WithT) int {
	port, err := utils.FreePort()
	g.Expect(err).NotTo(HaveOccurred())
	return port
}
