package controller

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// recordsByKeyUID is the selectable field of records that holds the UID of
// their ApiKey.
const recordsByKeyUID = "spec.apiKey.uid"

// RecordCollector deletes every ApiKeyRecord whose ApiKey, by UID, is gone,
// however it went: a finalizer stripped by a namespace editor, a namespace
// deleted, an etcd restore. Cluster-scoped records cannot be owned by
// namespaced ApiKeys, so the garbage collector cannot do this. Until the
// record goes, the auth server already refuses its token: it answers only
// for records whose ApiKey it sees.
type RecordCollector struct {
	client.Client

	// APIReader confirms with the API server that a key is gone before its
	// records are deleted: the cache may not have seen a key created
	// moments ago.
	APIReader client.Reader

	// records indexes the cached records by key UID; the ApiKey controller
	// keeps it.
	records *keyRecords
}

// Reconcile deletes the record req names if its ApiKey no longer exists.
func (c *RecordCollector) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rec := &apikeysv1alpha1.ApiKeyRecord{}
	if err := c.Get(ctx, req.NamespacedName, rec); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	exists, err := c.keyExists(ctx, rec.Spec.ApiKey)
	if err != nil || exists {
		return ctrl.Result{}, err
	}
	ctrl.LoggerFrom(ctx).Info("Deleting the record of a key that is gone",
		"record", rec.Name, "namespace", rec.Spec.ApiKey.Namespace, "apiKey", rec.Spec.ApiKey.Name)
	err = c.Delete(ctx, rec, client.Preconditions{UID: &rec.UID})
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// keyExists reports whether the ApiKey ref names still exists with ref's UID.
func (c *RecordCollector) keyExists(ctx context.Context, ref apikeysv1alpha1.ApiKeyReference) (bool, error) {
	name := client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}
	key := &apikeysv1alpha1.ApiKey{}
	if err := c.Get(ctx, name, key); err == nil && string(key.UID) == ref.UID {
		return true, nil
	} else if err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"))
	err := c.APIReader.Get(ctx, name, m)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil && string(m.UID) == ref.UID, err
}

// SetupWithManager reconciles the records of each ApiKey that is deleted,
// each record created or changed while the operator runs, and, once at
// start, the records whose key the cache does not hold (orphans left while
// the operator was down). The records listed at start and the cache's
// periodic replays of them are not queued: a queue that held every record
// once keeps the memory of its peak, and only a record whose key is gone
// needs the collector.
func (c *RecordCollector) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		c.collectAtStart(ctx, mgr.GetCache())
		return nil
	})); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&apikeysv1alpha1.ApiKeyRecord{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return !e.IsInInitialList },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return e.ObjectOld.GetResourceVersion() != e.ObjectNew.GetResourceVersion()
			},
		})).
		Watches(&apikeysv1alpha1.ApiKey{}, handler.Funcs{DeleteFunc: c.enqueueRecordsOf}).
		Named("apikeyrecord-collector").
		Complete(c)
}

// collectAtStart reconciles, once the cache has synced, every record whose
// key the cache does not hold by UID, reading the cache without copying it.
func (c *RecordCollector) collectAtStart(ctx context.Context, objects cache.Cache) {
	log := ctrl.LoggerFrom(ctx).WithName("apikeyrecord-collector")
	keys := map[types.UID]bool{}
	if err := forEachCached(ctx, objects, &apikeysv1alpha1.ApiKey{}, &apikeysv1alpha1.ApiKeyList{},
		func(obj client.Object) { keys[obj.GetUID()] = true }); err != nil {
		log.Error(err, "Could not read the cached ApiKeys; orphans are collected when the operator next starts")
		return
	}
	var orphans []string
	if err := forEachCached(ctx, objects, &apikeysv1alpha1.ApiKeyRecord{}, &apikeysv1alpha1.ApiKeyRecordList{},
		func(obj client.Object) {
			if rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord); ok && !keys[types.UID(rec.Spec.ApiKey.UID)] {
				orphans = append(orphans, rec.Name)
			}
		}); err != nil {
		log.Error(err, "Could not read the cached records; orphans are collected when the operator next starts")
		return
	}
	for _, name := range orphans {
		if _, err := c.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Name: name}}); err != nil {
			log.Error(err, "Could not collect a record at start", "record", name)
		}
	}
}

// enqueueRecordsOf queues the records of a deleted ApiKey: those the index
// holds or, until it has every record listed at start, those the API server
// holds.
func (c *RecordCollector) enqueueRecordsOf(ctx context.Context, e event.DeleteEvent,
	q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if c.records.synced.Load() {
		for _, name := range c.records.names(e.Object.GetUID()) {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
		}
		return
	}
	var records apikeysv1alpha1.ApiKeyRecordList
	if err := c.APIReader.List(ctx, &records, client.MatchingFields{recordsByKeyUID: string(e.Object.GetUID())}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Could not list the records of a deleted ApiKey; they are collected when the operator next starts",
			"namespace", e.Object.GetNamespace(), "name", e.Object.GetName())
		return
	}
	for i := range records.Items {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: records.Items[i].Name}})
	}
}
