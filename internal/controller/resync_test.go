package controller

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

var _ = Describe("Deadlines further off than the cache's replay", func() {
	It("get no timer until a pass finds them near", func() {
		r, clock := pinnedReconciler()
		r.Resync = 10 * time.Hour
		key := unwatchedKey("far-")
		key.Spec.TTL = &metav1.Duration{Duration: 48 * time.Hour}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())

		res := reconcileOnce(r, key)
		expectOneLiveToken(fetch(key))
		Expect(res.RequeueAfter).To(BeZero(), "the warning is 43.2h away: a replay comes first")

		By("a replay's pass 32h later, 11.2h before the warning")
		*clock = clock.Add(32 * time.Hour)
		res = reconcileOnce(r, key)
		Expect(res.RequeueAfter).To(BeNumerically("~", 11*time.Hour+12*time.Minute, time.Second))
	})

	It("are met through the replay", func() {
		// An operator for the crash namespace whose cache replays every
		// ApiKey each second, so that a key 4 s from expiry is 3.3 replays
		// away, beyond the horizon of a timer.
		byObject := CacheOptions()
		byObject[&apikeysv1alpha1.ApiKey{}] = cache.ByObject{Transform: trimApiKey, SyncPeriod: ptr.To(time.Second)}
		mgr, err := ctrl.NewManager(testEnv.Config, ctrl.Options{
			Scheme:                 k8sClient.Scheme(),
			Metrics:                metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress: "0",
			Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{crashNamespace: {}}, ByObject: byObject},
			Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		Expect((&ApiKeyReconciler{
			Client:    mgr.GetClient(),
			APIReader: mgr.GetAPIReader(),
			Recorder:  mgr.GetEventRecorder("apikey-operator"),
			Policy:    testPolicy,
			Resync:    time.Second,
		}).SetupWithManager(mgr)).To(Succeed())
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- mgr.Start(runCtx) }()
		DeferCleanup(func() {
			stop()
			Eventually(done, timeout).Should(Receive(Not(HaveOccurred())))
		})

		key := unwatchedKey("replayed-")
		key.Spec.TTL = &metav1.Duration{Duration: 4 * time.Second}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		Eventually(func() *metav1.Condition { return condition(fetch(key), apikeysv1alpha1.ConditionExpired) },
			10*time.Second, interval).Should(HaveField("Status", metav1.ConditionTrue))
	})
})
