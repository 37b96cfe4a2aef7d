package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// expirationTimestamp lets an alert fire on keys about to expire, earlier
// or later than the ExpiringSoon condition does. Its labels name the key,
// never a token.
var expirationTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "apikey_expiration_timestamp_seconds",
	Help: "When the live token of an ApiKey expires, in seconds since the Unix epoch; absent for keys that never expire.",
}, []string{"namespace", "name"})

func init() {
	metrics.Registry.MustRegister(expirationTimestamp)
}

// reportExpiry exports the live token's expiry, or withdraws it when the
// key has no token or one that never expires.
func reportExpiry(p *pass) {
	if p.live == nil || p.expiresAt == nil {
		forgetExpiry(types.NamespacedName{Namespace: p.key.Namespace, Name: p.key.Name})
		return
	}
	expirationTimestamp.WithLabelValues(p.key.Namespace, p.key.Name).Set(float64(p.expiresAt.Unix()))
}

// forgetExpiry withdraws a key's expiry, for a key that is gone.
func forgetExpiry(key types.NamespacedName) {
	expirationTimestamp.DeleteLabelValues(key.Namespace, key.Name)
}
