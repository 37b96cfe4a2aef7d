package plugin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
)

// testMaxTTL is the operator's --max-ttl in this suite.
const testMaxTTL = 24 * time.Hour

// testPolicy is the controller's policy in this suite. Its owner rule is
// installed only by the specs that issue Owner keys.
var testPolicy = policy.New(policy.Options{
	MaxTTL:                 testMaxTTL,
	OwnerPolicyName:        "apikey-operator-owner-policy",
	OwnerPolicyBindingName: "apikey-operator-owner-policy-binding",
})

var (
	ctx       context.Context
	cancel    context.CancelFunc
	testEnv   *envtest.Environment
	k8sClient client.Client

	// adminKubeconfig is a kubeconfig file for an envtest user in
	// system:masters, the --kubeconfig every command gets.
	adminKubeconfig string
)

func TestPlugin(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kubectl-apikey Suite")
}

var _ = BeforeSuite(func() {
	klog.SetLogger(testenv.Log(GinkgoWriter))
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	testEnv, k8sClient, err = testenv.Start(testenv.Options{})
	Expect(err).NotTo(HaveOccurred())

	mgr, err := ctrl.NewManager(testEnv.Config, ctrl.Options{Scheme: testenv.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	Expect(err).NotTo(HaveOccurred())
	Expect((&controller.ApiKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("apikey-operator"),
		Policy:    testPolicy,
	}).SetupWithManager(mgr)).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()

	admin, err := testEnv.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := admin.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	adminKubeconfig = filepath.Join(GinkgoT().TempDir(), "admin.kubeconfig")
	Expect(os.WriteFile(adminKubeconfig, kubeconfig, 0o600)).To(Succeed())
})

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// result is what one run of the plugin did.
type result struct {
	code           int
	stdout, stderr string
}

// kubectlApikey runs the plugin in-process with the admin kubeconfig.
func kubectlApikey(args ...string) result {
	return kubectlApikeyWith(adminKubeconfig, args...)
}

// kubectlApikeyWith runs the plugin in-process against kubeconfig, as
// `kubectl apikey --kubeconfig kubeconfig args...` would.
func kubectlApikeyWith(kubeconfig string, args ...string) result {
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	code := Run(ctx, append([]string{"--kubeconfig", kubeconfig}, args...), streams)
	r := result{code: code, stdout: out.String(), stderr: errOut.String()}
	GinkgoWriter.Printf("$ kubectl apikey %s\n[exit %d]\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// newNamespace creates a namespace of its own for one spec.
func newNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "plugin-"}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// writeKubeconfig writes a copy of the admin kubeconfig with one context per
// entry of namespaces (context name → default namespace), all for the same
// user and server, and current the current context.
func writeKubeconfig(namespaces map[string]string, current string) string {
	GinkgoHelper()
	kc, err := clientcmd.LoadFromFile(adminKubeconfig)
	Expect(err).NotTo(HaveOccurred())
	base := kc.Contexts[kc.CurrentContext]
	Expect(base).NotTo(BeNil())
	for name, ns := range namespaces {
		c := base.DeepCopy()
		c.Namespace = ns
		kc.Contexts[name] = c
	}
	kc.CurrentContext = current
	path := filepath.Join(GinkgoT().TempDir(), "contexts.kubeconfig")
	Expect(clientcmd.WriteToFile(*kc, path)).To(Succeed())
	return path
}
