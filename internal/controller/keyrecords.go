package controller

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// keyRecords indexes the cached records by the UID of their ApiKey, in
// place of a field index of the cache: client-go keeps a set, that is a map,
// for each indexed value, about 390 B a key at 100k keys, where a short
// slice of names costs about 80.
//
// The ApiKey controller's watch of records feeds it, and updates it before
// it wakes the record's key, so the pass that follows sees the record. The
// controller starts its workers once the watch has handed it every cached
// record.
type keyRecords struct {
	mu    sync.RWMutex
	byKey map[string][]string // key UID → record names
	// synced is set once every record listed at start is in.
	synced atomic.Bool
}

func newKeyRecords() *keyRecords { return &keyRecords{byKey: map[string][]string{}} }

// names returns the names of the records of the ApiKey with UID uid.
func (k *keyRecords) names(uid types.UID) []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return slices.Clone(k.byKey[string(uid)])
}

// set notes rec. Its key UID and name are the cached object's strings, put
// in place of those of the object it replaces, which the cache dropped.
func (k *keyRecords) set(rec *apikeysv1alpha1.ApiKeyRecord) {
	uid := rec.Spec.ApiKey.UID
	k.mu.Lock()
	defer k.mu.Unlock()
	names := k.byKey[uid]
	delete(k.byKey, uid)
	if i := slices.Index(names, rec.Name); i >= 0 {
		names[i] = rec.Name
	} else {
		names = append(names, rec.Name)
	}
	k.byKey[uid] = names
}

func (k *keyRecords) remove(rec *apikeysv1alpha1.ApiKeyRecord) {
	uid := rec.Spec.ApiKey.UID
	k.mu.Lock()
	defer k.mu.Unlock()
	names := slices.DeleteFunc(k.byKey[uid], func(n string) bool { return n == rec.Name })
	if len(names) == 0 {
		delete(k.byKey, uid)
	} else {
		k.byKey[uid] = names
	}
}

// source is the ApiKey controller's watch of records: it keeps the index
// and wakes the key of each record that changes.
func (k *keyRecords) source(c cache.Cache) source.SyncingSource {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	wake := func(q queue, rec *apikeysv1alpha1.ApiKeyRecord) {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: rec.Spec.ApiKey.Namespace, Name: rec.Spec.ApiKey.Name}})
	}
	h := handler.TypedFuncs[*apikeysv1alpha1.ApiKeyRecord, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[*apikeysv1alpha1.ApiKeyRecord], q queue) {
			k.set(e.Object)
			wake(q, e.Object)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[*apikeysv1alpha1.ApiKeyRecord], q queue) {
			if e.ObjectOld.Spec.ApiKey != e.ObjectNew.Spec.ApiKey {
				k.remove(e.ObjectOld)
				wake(q, e.ObjectOld)
			}
			k.set(e.ObjectNew)
			wake(q, e.ObjectNew)
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[*apikeysv1alpha1.ApiKeyRecord], q queue) {
			k.remove(e.Object)
			wake(q, e.Object)
		},
	}
	return &syncedSource{SyncingSource: source.Kind(c, &apikeysv1alpha1.ApiKeyRecord{}, h), synced: &k.synced}
}

// syncedSource sets synced once its source has synced.
type syncedSource struct {
	source.SyncingSource
	synced *atomic.Bool
}

func (s *syncedSource) WaitForSync(ctx context.Context) error {
	if err := s.SyncingSource.WaitForSync(ctx); err != nil {
		return err
	}
	s.synced.Store(true)
	return nil
}
