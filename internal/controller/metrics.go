package controller

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// expiryDesc lets an alert fire on keys about to expire, earlier or later
// than the ExpiringSoon condition does. Its labels name the key, never a
// token.
var expiryDesc = prometheus.NewDesc("apikey_expiration_timestamp_seconds",
	"When the live token of an ApiKey expires, in seconds since the Unix epoch; absent for keys that never expire.",
	[]string{"namespace", "name"}, nil)

// expiries is the collector of apikey_expiration_timestamp_seconds. It holds
// nothing per key: each scrape reads the expiry the controller last wrote
// into the status of the ApiKeys in its cache, as kube-state-metrics does
// for its objects. A series per key kept between scrapes would cost about
// 500 bytes a key (docs/scale.md).
var expiries = &expiryCollector{}

func init() {
	metrics.Registry.MustRegister(expiries)
}

type expiryCollector struct {
	mu    sync.Mutex
	cache cache.Cache
}

// readFrom makes the collector read c, the cache of the controller that
// started last in this process.
func (e *expiryCollector) readFrom(c cache.Cache) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cache = c
}

func (e *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

// Collect exports the expiry of every issued ApiKey that is not being
// deleted. Status is the controller's own report: it writes expiresAt from
// the live token's record in every pass, and a pass follows any other
// write to status at once.
func (e *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	c := e.cache
	e.mu.Unlock()
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inf, err := c.GetInformer(ctx, &apikeysv1alpha1.ApiKey{}, cache.BlockUntilSynced(false))
	if err != nil {
		return
	}
	// The informer's own store, not a List: a List copies every ApiKey
	// into a new slice on each scrape.
	store, ok := inf.(interface{ GetStore() toolscache.Store })
	if !ok {
		return
	}
	for _, obj := range store.GetStore().List() {
		key, ok := obj.(*apikeysv1alpha1.ApiKey)
		if !ok || key.DeletionTimestamp != nil || key.Status.RecordName == "" || key.Status.ExpiresAt == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue,
			float64(key.Status.ExpiresAt.Unix()), key.Namespace, key.Name)
	}
}
