package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
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
	k8sClient client.Client

	// managerLogs captures everything the manager and client-go log, at
	// every verbosity, so the leak specs can search it for tokens.
	managerLogs = &utils.LogBuffer{}
	// seenTokens collects every token a spec read from a Secret; AfterSuite
	// checks none of them reached logs, events, status or records.
	seenTokens tokenSet
	// managerCache is what the manager's informers hold.
	managerCache cache.Cache
	// reconciler is the suite manager's ApiKey controller.
	reconciler *ApiKeyReconciler
)

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
	klog.SetLogger(testenv.Log(managerLogs, zap.Level(zapcore.Level(-127))))

	ctx, cancel = context.WithCancel(context.TODO())
	var err error
	testEnv, k8sClient, err = testenv.Start(testenv.Options{})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: objectMeta(crashNamespace)})).To(Succeed())

	mgr, err := ctrl.NewManager(testEnv.Config, ctrl.Options{
		Scheme:  testenv.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   cache.Options{ReaderFailOnMissingInformer: true},
	})
	Expect(err).NotTo(HaveOccurred())
	managerCache = mgr.GetCache()
	reconciler = &ApiKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("apikey-operator"),
		Policy:    testPolicy,

		MaxConcurrentReconciles: 4,
		OwnerRuleRecheck:        time.Second,
		// The crash specs' keys are for the reconcilers those specs run.
		WatchFields: fields.OneTermNotEqualSelector("metadata.namespace", crashNamespace),
	}
	Expect(reconciler.SetupWithManager(mgr)).To(Succeed())

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
