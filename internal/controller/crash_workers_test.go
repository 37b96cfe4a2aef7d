package controller

import (
	"context"
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
)

// Crash recovery with several workers: a whole operator (manager, cache,
// work queue, MaxConcurrentReconciles workers) issues a burst of keys and is
// killed at its Nth write, whichever key that write was for; a fresh
// operator with as many workers must then leave every key with exactly one
// token, delivered and live. The single-key sweep above covers every write
// of one issuance; this covers the writes of many issuances interleaved, and
// the controller's in-memory record of what it created, which dies with it.
var _ = Describe("Recovering from a crash with several workers", func() {
	const keys = 8 // three writes each: Secret, record, status
	for _, workers := range []int{1, 4, 8} {
		for _, n := range []int{1, keys + 2, 2*keys + 3} {
			It(fmt.Sprintf("converges after dying at write %d of %d, with %d workers", n+1, 3*keys, workers), func() {
				burst := make([]*apikeysv1alpha1.ApiKey, keys)
				for i := range burst {
					// The finalizer is on from the create, as admission sets it.
					burst[i] = &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: crashNamespace,
						Name: fmt.Sprintf("burst-%d-%s", i, rand.String(6)), Finalizers: []string{Finalizer}}}
					Expect(k8sClient.Create(ctx, burst[i])).To(Succeed())
				}

				dying := runOperator(workers, n)
				Eventually(func() bool { return dying.crash.isDead() }, timeout, interval).Should(BeTrue(),
					"the operator finished the burst before its write %d", n+1)
				dying.stop()

				fresh := runOperator(workers, -1)
				Eventually(func(g Gomega) {
					for _, key := range burst {
						g.Expect(condition(fetch(key), apikeysv1alpha1.ConditionReady)).To(HaveField("Status", metav1.ConditionTrue))
					}
				}, timeout, interval).Should(Succeed())
				fresh.stop()
				for _, key := range burst {
					expectOneLiveToken(fetch(key))
				}
				expectNoTokenInEvents(dying.recorder)
				expectNoTokenInEvents(fresh.recorder)
			})
		}
	}
})

// operator is a whole operator process for the crash namespace.
type operator struct {
	crash    *crash
	recorder *events.FakeRecorder
	cancel   context.CancelFunc
	done     chan error
}

// runOperator starts a manager that sees only the crash namespace, with
// cmd/main.go's cache options and the given workers, whose every API call,
// through its cached client or its direct reader, goes through a crash that
// kills it before its (limit+1)th write.
func runOperator(workers, limit int) *operator {
	GinkgoHelper()
	op := &operator{
		crash:    newCrash(limit),
		recorder: events.NewFakeRecorder(1000),
		done:     make(chan error, 1),
	}
	mgr, err := ctrl.NewManager(testEnv.Config, ctrl.Options{
		Scheme:                 testenv.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{crashNamespace: {}}, ReaderFailOnMissingInformer: true},
		// The manager's own client, reading from its cache, as the crash's.
		NewClient: func(restCfg *rest.Config, opts client.Options) (client.Client, error) {
			c, err := client.NewWithWatch(restCfg, opts)
			if err != nil {
				return nil, err
			}
			return op.crash.client(c), nil
		},
		// Each spec starts operators with the same controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	// The manager's API reader, as it builds it, but the crash's.
	reader, err := client.NewWithWatch(testEnv.Config,
		client.Options{Scheme: testenv.Scheme, HTTPClient: mgr.GetHTTPClient(), Mapper: mgr.GetRESTMapper()})
	Expect(err).NotTo(HaveOccurred())
	Expect((&ApiKeyReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               op.crash.client(reader),
		Recorder:                op.recorder,
		Policy:                  testPolicy,
		MaxConcurrentReconciles: workers,
		WatchNamespace:          crashNamespace,
	}).SetupWithManager(mgr)).To(Succeed())
	var runCtx context.Context
	runCtx, op.cancel = context.WithCancel(ctx)
	go func() { op.done <- mgr.Start(runCtx) }()
	return op
}

// stop kills the operator and waits until it is gone.
func (op *operator) stop() {
	GinkgoHelper()
	op.cancel()
	Eventually(op.done, timeout).Should(Receive(Not(HaveOccurred())))
}
