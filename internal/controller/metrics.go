package controller

import (
	"context"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// expiryDesc lets an alert fire on keys about to expire, earlier or later
// than the ExpiringSoon condition does. Its labels name the key, never a
// token.
var expiryDesc = prometheus.NewDesc("apikey_expiration_timestamp_seconds",
	"When the live token of an ApiKey expires, in seconds since the Unix epoch; absent for keys that never expire.",
	[]string{"namespace", "name"}, nil)

// expiries is the collector of apikey_expiration_timestamp_seconds. It holds
// nothing per key: each scrape reads the expiry the controller last wrote
// into the status of each ApiKey, as its key watch keeps it, as
// kube-state-metrics does for its objects. A series per key kept between
// scrapes would cost about 500 bytes a key (docs/scale.md).
var expiries = &expiryCollector{}

func init() {
	metrics.Registry.MustRegister(expiries)
}

type expiryCollector struct {
	mu      sync.Mutex
	watches []*watchedKeys
}

// readWhileRunning has the collector read w, a controller's key watch, for
// as long as that controller's manager runs (and leads).
func (e *expiryCollector) readWhileRunning(w *watchedKeys) manager.Runnable {
	return manager.RunnableFunc(func(ctx context.Context) error {
		e.mu.Lock()
		e.watches = append(e.watches, w)
		e.mu.Unlock()
		<-ctx.Done()
		e.mu.Lock()
		e.watches = slices.DeleteFunc(e.watches, func(o *watchedKeys) bool { return o == w })
		e.mu.Unlock()
		return nil
	})
}

func (e *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

// Collect exports the expiry of every issued ApiKey that is not being
// deleted, from the key watches of the controllers running in this
// process. Status is the controller's own report: it writes expiresAt from
// the live token's record in every pass, and a pass follows any other
// write to status at once.
func (e *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	watches := slices.Clone(e.watches)
	e.mu.Unlock()
	// Two controllers in one process (tests do that) may see the same key:
	// a series must be sent once.
	var sent map[types.NamespacedName]bool
	if len(watches) > 1 {
		sent = map[types.NamespacedName]bool{}
	}
	type expiry struct {
		name types.NamespacedName
		at   int64
	}
	var series []expiry // sent after the watch's lock is released
	for _, w := range watches {
		w.each(func(name types.NamespacedName, s keyState) {
			if s.expiresAt == 0 || sent[name] {
				return
			}
			if sent != nil {
				sent[name] = true
			}
			series = append(series, expiry{name, s.expiresAt})
		})
	}
	for _, e := range series {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(e.at), e.name.Namespace, e.name.Name)
	}
}
