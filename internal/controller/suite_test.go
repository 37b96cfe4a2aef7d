package controller

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// crashNamespace holds the keys of the crash-recovery specs. The suite's
// manager does not see it, so those specs can drive reconcilers by hand and
// stop them between any two API calls.
const crashNamespace = "crash"

var (
	ctx       context.Context
	cancel    context.CancelFunc
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8sClient client.Client
	scheme    = runtime.NewScheme()

	// managerLogs captures everything the manager and client-go log, at
	// every verbosity, so the leak specs can search it for tokens.
	managerLogs = &utils.LogBuffer{}
	// seenTokens collects every token a spec read from a Secret; AfterSuite
	// checks none of them reached logs, events, status or records.
	seenTokens tokenSet
	// managerCache is what the manager's informers hold.
	managerCache cache.Cache
)

// withCrashNamespaceHidden hides the crash specs' keys from the manager, so
// only the reconcilers those specs run touch them. It adds the selector to
// the ApiKey entry of opts, keeping its transform: a second entry for the
// same kind would make the cache pick one of the two at random.
func withCrashNamespaceHidden(opts map[client.Object]cache.ByObject) map[client.Object]cache.ByObject {
	hidden := fields.OneTermNotEqualSelector("metadata.namespace", crashNamespace)
	for obj, byObject := range opts {
		if _, ok := obj.(*apikeysv1alpha1.ApiKey); ok {
			byObject.Field = hidden
			opts[obj] = byObject
			return opts
		}
	}
	opts[&apikeysv1alpha1.ApiKey{}] = cache.ByObject{Field: hidden}
	return opts
}

// testMaxTTL is the manager's --max-ttl in this suite.
const testMaxTTL = 90 * 24 * time.Hour

// testPolicy is the suite's rules: --max-ttl, a --forbidden-groups entry and
// the owner policy's names, as the manager would be started with.
var testPolicy = policy.New(policy.Options{
	MaxTTL:                 testMaxTTL,
	ForbiddenGroups:        []string{"cluster-admins"},
	OwnerPolicyName:        "apikey-operator-owner-policy",
	OwnerPolicyBindingName: "apikey-operator-owner-policy-binding",
})

func TestController(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller Suite")
}

var _ = BeforeSuite(func() {
	logger := zap.New(zap.WriteTo(managerLogs), zap.Level(zapcore.Level(-127)), zap.UseDevMode(true))
	logf.SetLogger(logger)
	klog.SetLogger(logger)

	ctx, cancel = context.WithCancel(context.TODO())
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apikeysv1alpha1.AddToScheme(scheme))

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	testEnv.BinaryAssetsDirectory, err = utils.ControlPlaneDir()
	Expect(err).NotTo(HaveOccurred())
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())

	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: objectMeta(crashNamespace)})).To(Succeed())

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   cache.Options{ByObject: withCrashNamespaceHidden(CacheOptions())},
	})
	Expect(err).NotTo(HaveOccurred())
	managerCache = mgr.GetCache()
	Expect((&ApiKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("apikey-operator"),
		Policy:    testPolicy,

		MaxConcurrentReconciles: 4,
	}).SetupWithManager(mgr)).To(Succeed())

	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
})

var _ = AfterSuite(func() {
	By("checking that no token read in this suite leaked anywhere")
	expectNoLeak(seenTokens.all())
	cancel()
	Expect(testEnv.Stop()).To(Succeed())
})

// tokenSet is the tokens the specs have seen, safe for parallel use.
type tokenSet struct {
	mu     sync.Mutex
	tokens []string
}

func (s *tokenSet) add(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, tok)
}

func (s *tokenSet) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}
