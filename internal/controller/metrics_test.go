package controller

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("The expiry metric of an operator limited to namespaces", func() {
	It("exports the expiry of the keys it sees", func() {
		// runOperator's cache sees only the crash namespace: its ApiKey
		// informer keeps one store per namespace, not one in all.
		op := runOperator(1, -1)
		defer op.stop()
		key := unwatchedKey("expiry-")
		key.Spec.TTL = &metav1.Duration{Duration: 10 * time.Hour}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		Eventually(func() *metav1.Time { return fetch(key).Status.ExpiresAt }, timeout, interval).ShouldNot(BeNil())
		Eventually(func() float64 { v, _ := expiryGauge(key); return v }, timeout, interval).
			Should(BeEquivalentTo(fetch(key).Status.ExpiresAt.Unix()))
	})
})

// The metric reads status, which whoever holds apikeys/status can write: a
// forged expiresAt must not stay there, nor in the metric.
var _ = Describe("The expiry metric when status is forged", func() {
	It("reports the record's expiry again once the controller rewrites status", func() {
		key := newKey(newNamespace())
		key.Spec.TTL = &metav1.Duration{Duration: 10 * time.Hour}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		_, rec := expectOneLiveToken(key)
		Expect(rec.Spec.ExpiresAt).NotTo(BeNil())
		want := rec.Spec.ExpiresAt.Unix()

		forgedAt := metav1.NewTime(time.Now().AddDate(5, 0, 0).Truncate(time.Second))
		Eventually(func() error {
			cur := fetch(key)
			forged := cur.DeepCopy()
			forged.Status.ExpiresAt = &forgedAt
			return k8sClient.Status().Patch(ctx, forged, client.MergeFromWithOptions(cur, client.MergeFromWithOptimisticLock{}))
		}, timeout, interval).Should(Succeed())

		Eventually(func() int64 { return fetch(key).Status.ExpiresAt.Unix() }, timeout, interval).Should(Equal(want))
		Eventually(func() float64 { v, _ := expiryGauge(key); return v }, timeout, interval).Should(BeEquivalentTo(want))
	})
})
