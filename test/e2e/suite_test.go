//go:build e2e

// Package e2e drives the operator with clients written by others: a real
// kube-apiserver calling the auth server as its token webhook, kubectl,
// nginx, Caddy and Traefik in front of a backend, and kube-controller-manager
// collecting garbage and deleting namespaces. It runs the controller and an
// auth-server-only manager as separate managers, as the two Deployments run
// in a cluster.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// noControllerNamespace is invisible to the controller but not to the auth
// server: keys there show that revocation does not wait for the controller.
const noControllerNamespace = "no-controller"

const (
	// webhookCacheTTL is the suite kube-apiserver's
	// --authentication-token-webhook-cache-ttl.
	webhookCacheTTL = time.Second
	// apiserverTokenCacheTTL is how long kube-apiserver may go on accepting
	// a token after the auth server last accepted it. Above the webhook's
	// own cache it caches every successful token authentication for 10s
	// (TokenSuccessCacheTTL, k8s.io/kubernetes pkg/kubeapiserver/options; no
	// flag sets it), so with webhookCacheTTL under 10s the bound is 10s.
	apiserverTokenCacheTTL = 10 * time.Second
)

var (
	ctx       context.Context
	cancel    context.CancelFunc
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8sClient client.Client
	scheme    = testenv.Scheme
	workDir   string

	// authURL is the auth server (the auth-only manager's webhook server).
	authURL string
	// authCAFile is the PEM CA that signed the auth server's certificate.
	authCAFile string
	// authCertDir holds the auth server's serving certificate.
	authCertDir string
	authPort    int
	// kubectlPath is the kubectl built by `make envtest`.
	kubectlPath string
	// kcm is kube-controller-manager, for garbage collection and namespace
	// deletion.
	kcm *controlPlaneProcess
	// stopController stops the controller startController runs; nil while
	// it is stopped.
	stopController func()
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "End-to-end Suite")
}

var _ = BeforeSuite(func() {
	testenv.Log(GinkgoWriter)
	ctx, cancel = context.WithCancel(context.TODO())
	workDir = GinkgoT().TempDir()

	By("preparing the auth server's serving certificate")
	authCertDir = filepath.Join(workDir, "auth-certs")
	_, err := utils.WriteServingCert(authCertDir)
	Expect(err).NotTo(HaveOccurred())
	authCAFile = filepath.Join(authCertDir, "ca.crt")
	authPort, err = utils.FreePort()
	Expect(err).NotTo(HaveOccurred())
	authURL = fmt.Sprintf("https://127.0.0.1:%d", authPort)

	By("starting kube-apiserver with the auth server as its token webhook (v1)")
	testEnv, k8sClient, err = testenv.Start(testenv.Options{APIServerFlags: tokenWebhookFlags("v1")})
	Expect(err).NotTo(HaveOccurred())
	cfg = testEnv.Config
	kubectlPath = filepath.Join(testEnv.BinaryAssetsDirectory, "kubectl")
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metaName(noControllerNamespace)})).To(Succeed())

	By("running kube-controller-manager: the garbage collector and the namespace controller")
	kcmPath, kcmArgs, err := testenv.ControllerManager(testEnv, workDir, "garbage-collector-controller", "namespace-controller")
	Expect(err).NotTo(HaveOccurred())
	kcm = &controlPlaneProcess{name: "kube-controller-manager", path: kcmPath, args: kcmArgs}
	kcm.start()

	By("running the controller, as the leader-elected Deployment would")
	startController()

	By("running the auth server alone, as the auth-only Deployment would")
	auth := authserver.NewServer(authserver.NewIndex(), authserver.Options{UsageFlushInterval: time.Second})
	authMgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "127.0.0.1:0",
		// As cmd/main.go configures an auth-only replica: the auth server's
		// endpoints ahead of the webhook server's path-cleaning mux.
		WebhookServer: auth.WebhookServer(webhook.Options{
			Host: "127.0.0.1", Port: authPort, CertDir: authCertDir,
		}),
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: authserver.CacheOptions()},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(auth.SetupWithManager(authMgr)).To(Succeed())
	start(authMgr)
	Eventually(auth.Index().Synced, 30*time.Second, 50*time.Millisecond).Should(BeTrue())
	Eventually(func() error {
		resp, err := authHTTPClient().Get(authURL + "/auth")
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
})

var _ = AfterSuite(func() {
	cancel()
	if kcm != nil {
		kcm.stop()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// startController runs the controller in a manager of its own, as the
// leader-elected Deployment would, until stopController.
func startController() {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   cache.Options{ReaderFailOnMissingInformer: true},
		// A restarted controller registers its controllers' names again.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect((&controller.ApiKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("apikey-operator"),
		Policy:    policy.New(policy.Options{MaxTTL: 24 * time.Hour}),

		WatchFields: fields.OneTermNotEqualSelector("metadata.namespace", noControllerNamespace),
	}).SetupWithManager(mgr)).To(Succeed())
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(mgrCtx)).To(Succeed())
	}()
	stopController = func() {
		stop()
		<-done
		stopController = nil
	}
}

// controlPlaneProcess is a control-plane binary the suite runs beside
// envtest's kube-apiserver and etcd, and a spec may stop and start again.
type controlPlaneProcess struct {
	name, path string
	args       []string
	running    *utils.Process
}

// start runs the process; its output goes to <name>.log in the suite's
// work directory, never to the test's output.
func (p *controlPlaneProcess) start() {
	GinkgoHelper()
	var err error
	p.running, err = utils.StartProcess(p.name, p.path, p.args, &utils.LogBuffer{}, filepath.Join(workDir, p.name+".log"))
	Expect(err).NotTo(HaveOccurred())
}

func (p *controlPlaneProcess) stop() {
	GinkgoHelper()
	if p.running != nil {
		Expect(p.running.Stop(10 * time.Second)).To(Succeed())
		p.running = nil
	}
}

func start(mgr ctrl.Manager) {
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
}

// tokenWebhookFlags are the kube-apiserver flags that point it at the auth
// server's /tokenreview with the given TokenReview version and
// webhookCacheTTL.
func tokenWebhookFlags(version string) map[string]string {
	GinkgoHelper()
	ca, err := os.ReadFile(authCAFile)
	Expect(err).NotTo(HaveOccurred())
	flags, err := testenv.TokenWebhookFlags(workDir, authURL+"/tokenreview", ca, version, webhookCacheTTL)
	Expect(err).NotTo(HaveOccurred())
	return flags
}
