package certs

import (
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	webhookv1alpha1 "github.com/apikey-operator/apikey-operator/internal/webhook/v1alpha1"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

const (
	operatorNamespace = "apikey-operator-system"
	keyNamespace      = "team-a"
)

// TestSelfSignedMode starts from nothing (no Secret, empty certificate
// directories, webhook configurations whose CA bundle trusts nothing we
// serve) and checks that the operator issues the certificate, injects its CA,
// and that kube-apiserver then reaches the real admission webhook over TLS;
// that a replica which only reads stays unready and closed until the Secret
// exists, then serves the same certificate; and that a lost Secret or a lost
// CA bundle is put back.
func TestSelfSignedMode(t *testing.T) {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(60 * time.Second)
	g.SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	logs := &utils.LogBuffer{}
	logf.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(true)))
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apikeysv1alpha1.AddToScheme(scheme))
	testEnv := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join("..", "..", "config", "webhook")}},
		BinaryAssetsDirectory: controlPlaneDir(t),
	}
	cfg, err := testEnv.Start()
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { g.Expect(testEnv.Stop()).To(Succeed()) })
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
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
		Service:                        "apikey-operator-webhook-service",
		ExtraHosts:                     []string{served.LocalServingHost},
		MutatingWebhookConfiguration:   mutating.Name,
		ValidatingWebhookConfiguration: validating.Name,
	}
	secretKey := opts.secretKey()

	t.Log("starting a replica that only reads, as the auth server alone runs")
	readerOpts := opts
	readerOpts.CertDir = t.TempDir()
	readerPort := mustFreePort(g)
	reader := startManager(t, cfg, scheme, readerOpts, served.LocalServingHost, readerPort, nil)
	g.Eventually(reader.readyz).Should(Equal(http.StatusInternalServerError))
	g.Consistently(func(g Gomega) {
		g.Expect(reader.readyz()).To(Equal(http.StatusInternalServerError))
		_, err := net.DialTimeout("tcp", net.JoinHostPort(served.LocalServingHost, strconv.Itoa(readerPort)), time.Second)
		g.Expect(err).To(HaveOccurred(), "the webhook server listens without a certificate")
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(admin.Get(ctx, secretKey, &corev1.Secret{})).NotTo(Succeed(), "a reader must not issue")

	t.Log("starting the replica that issues, with the real admission webhooks")
	issuerOpts := opts
	issuerOpts.CertDir = t.TempDir()
	issuerOpts.Issue = true
	leader := startManager(t, cfg, scheme, issuerOpts, served.LocalServingHost, served.LocalServingPort, func(mgr ctrl.Manager) error {
		return webhookv1alpha1.SetupApiKeyWebhookWithManager(mgr, policy.New(24*time.Hour, nil, nil))
	})

	secret := &corev1.Secret{}
	g.Eventually(func() error { return admin.Get(ctx, secretKey, secret) }).Should(Succeed())
	g.Expect(secret.Type).To(Equal(corev1.SecretTypeTLS))
	g.Expect(secret.Data).To(HaveKey(caBundleKey))
	g.Eventually(caBundlesOf(admin, mutating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))
	g.Eventually(caBundlesOf(admin, validating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))
	g.Eventually(leader.readyz).Should(Equal(http.StatusOK))
	g.Expect(os.ReadFile(filepath.Join(issuerOpts.CertDir, "tls.crt"))).To(Equal(secret.Data[corev1.TLSCertKey]))

	t.Log("creating an ApiKey through kube-apiserver, which calls the mutating webhook over TLS")
	createKeyStampedWithOwner(g, admin)

	t.Log("checking the reading replica now serves the same certificate")
	g.Eventually(reader.readyz).Should(Equal(http.StatusOK))
	g.Expect(servedCertificate(g, secret.Data[caBundleKey], served.LocalServingHost, readerPort)).To(Equal(secret.Data[corev1.TLSCertKey]))

	t.Log("deleting the Secret: a new CA is issued, injected and served by both replicas")
	first := secret.DeepCopy()
	g.Expect(admin.Delete(ctx, secret)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, secretKey, secret)).To(Succeed())
		g.Expect(secret.UID).NotTo(Equal(first.UID))
	}).Should(Succeed())
	g.Expect(secret.Data[caBundleKey]).NotTo(Equal(first.Data[caBundleKey]))
	g.Eventually(caBundlesOf(admin, mutating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))
	g.Eventually(caBundlesOf(admin, validating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))
	for _, port := range []int{served.LocalServingPort, readerPort} {
		g.Eventually(func() []byte {
			return servedCertificate(g, secret.Data[caBundleKey], served.LocalServingHost, port)
		}).Should(Equal(secret.Data[corev1.TLSCertKey]))
	}
	createKeyStampedWithOwner(g, admin)

	t.Log("applying a configuration again without its CA bundle: the bundle comes back")
	setCABundles(g, admin, validating, nil)
	g.Eventually(caBundlesOf(admin, validating)).Should(HaveEach(Equal(secret.Data[caBundleKey])))

	t.Log("checking no private key reached the logs")
	for _, s := range []*corev1.Secret{first, secret} {
		for _, k := range []string{caKeyKey, corev1.TLSPrivateKeyKey} {
			block, _ := pem.Decode(s.Data[k])
			g.Expect(block).NotTo(BeNil())
			g.Expect(logs.String()).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString(block.Bytes)[40:80]))
			g.Expect(logs.String()).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString(s.Data[k])[60:100]))
		}
	}
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

func createKeyStampedWithOwner(g *WithT, c client.Client) {
	g.Eventually(func(g Gomega) {
		key := &apikeysv1alpha1.ApiKey{}
		key.Namespace, key.GenerateName = keyNamespace, "probe-"
		g.Expect(c.Create(context.Background(), key)).To(Succeed())
		g.Expect(key.Spec.Owner).NotTo(BeNil(), "the mutating webhook stamps the owner")
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

func controlPlaneDir(t *testing.T) string {
	dir, err := utils.ControlPlaneDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
