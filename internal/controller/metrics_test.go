package controller

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

var _ = Describe("The expiry metric of an operator limited to namespaces", func() {
	It("exports the expiry of the keys it sees", func() {
		// runOperator's key watch sees only the crash namespace.
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
		key := readyKeyExpiringIn(10 * time.Hour)
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

var _ = Describe("The expiry metric", func() {
	It("exports each key's expiry, follows a rotation and goes with the key", func() {
		key := readyKeyExpiringIn(10 * time.Hour)
		Eventually(func() float64 { v, _ := expiryGauge(key); return v }, timeout, interval).
			Should(BeEquivalentTo(key.Status.ExpiresAt.Unix()))

		key = requestRotation(key, "renew")
		Eventually(func() float64 { v, _ := expiryGauge(key); return v }, timeout, interval).
			Should(BeEquivalentTo(key.Status.ExpiresAt.Unix()))

		Expect(k8sClient.Delete(ctx, key)).To(Succeed())
		Eventually(func() bool { _, found := expiryGauge(key); return found }, timeout, interval).
			Should(BeFalse(), "the metric still names a deleted key")
	})
})

// expiryGauge collects apikey_expiration_timestamp_seconds for key, as a
// scrape would, and reports whether it is there.
func expiryGauge(key *apikeysv1alpha1.ApiKey) (float64, bool) {
	GinkgoHelper()
	ch := make(chan prometheus.Metric)
	go func() {
		expiries.Collect(ch)
		close(ch)
	}()
	value, found := 0.0, false
	for m := range ch {
		var d dto.Metric
		Expect(m.Write(&d)).To(Succeed())
		labels := map[string]string{}
		for _, l := range d.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["namespace"] == key.Namespace && labels["name"] == key.Name {
			value, found = d.GetGauge().GetValue(), true
		}
	}
	return value, found
}

// readyKeyExpiringIn creates a key in a new namespace with a ttl of d and
// waits until it is Ready.
func readyKeyExpiringIn(d time.Duration) *apikeysv1alpha1.ApiKey {
	GinkgoHelper()
	key := newKey(newNamespace())
	key.Spec.TTL = &metav1.Duration{Duration: d}
	Expect(k8sClient.Create(ctx, key)).To(Succeed())
	return waitReady(key)
}
