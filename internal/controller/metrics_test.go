package controller

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
