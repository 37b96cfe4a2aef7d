package controller

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
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
	mu     sync.Mutex
	caches []cache.Cache
}

// readWhileRunning has the collector read c, a controller's cache, for as
// long as that controller's manager runs (and leads).
func (e *expiryCollector) readWhileRunning(c cache.Cache) manager.Runnable {
	return manager.RunnableFunc(func(ctx context.Context) error {
		e.mu.Lock()
		e.caches = append(e.caches, c)
		e.mu.Unlock()
		<-ctx.Done()
		e.mu.Lock()
		e.caches = slices.DeleteFunc(e.caches, func(o cache.Cache) bool { return o == c })
		e.mu.Unlock()
		return nil
	})
}

func (e *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

// Collect exports the expiry of every issued ApiKey that is not being
// deleted, from the caches of the controllers running in this process. Status is the controller's own report: it writes expiresAt from
// the live token's record in every pass, and a pass follows any other
// write to status at once.
func (e *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	caches := slices.Clone(e.caches)
	e.mu.Unlock()
	// Two controllers in one process (tests do that) may see the same key:
	// a series must be sent once.
	var sent map[types.NamespacedName]bool
	if len(caches) > 1 {
		sent = map[types.NamespacedName]bool{}
	}
	for _, c := range caches {
		for _, key := range cachedApiKeys(c) {
			if key.DeletionTimestamp != nil || key.Status.RecordName == "" || key.Status.ExpiresAt == nil {
				continue
			}
			if sent != nil {
				id := types.NamespacedName{Namespace: key.Namespace, Name: key.Name}
				if sent[id] {
					continue
				}
				sent[id] = true
			}
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue,
				float64(key.Status.ExpiresAt.Unix()), key.Namespace, key.Name)
		}
	}
}

// cachedApiKeys are the ApiKeys in c, as cached (see forEachCached).
func cachedApiKeys(c cache.Cache) []*apikeysv1alpha1.ApiKey {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []*apikeysv1alpha1.ApiKey
	_ = forEachCached(ctx, c, &apikeysv1alpha1.ApiKey{}, &apikeysv1alpha1.ApiKeyList{}, func(obj client.Object) {
		if key, ok := obj.(*apikeysv1alpha1.ApiKey); ok {
			keys = append(keys, key)
		}
	}, cache.BlockUntilSynced(false))
	return keys
}

// forEachCached calls each with every object of obj's kind in c, as cached
// (never to be changed): from its informer's store, or, for a cache whose
// informer keeps no single store (one limited to namespaces), from a List
// into list that does not deep-copy. Neither copies every object, as a
// plain List would.
func forEachCached(ctx context.Context, c cache.Cache, obj client.Object, list client.ObjectList,
	each func(client.Object), opts ...cache.InformerGetOption) error {
	inf, err := c.GetInformer(ctx, obj, opts...)
	if err != nil {
		return err
	}
	if store, ok := inf.(interface{ GetStore() toolscache.Store }); ok {
		for _, o := range store.GetStore().List() {
			if co, ok := o.(client.Object); ok {
				each(co)
			}
		}
		return nil
	}
	if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	return meta.EachListItem(list, func(o runtime.Object) error {
		if co, ok := o.(client.Object); ok {
			each(co)
		}
		return nil
	})
}
