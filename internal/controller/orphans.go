package controller

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

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
//
// It runs beside the ApiKey controller and learns from its watches: of
// each key that goes, and of each record created or changed whose key that
// controller does not know.
type RecordCollector struct {
	client.Client

	// APIReader reads the record and confirms with the API server that its
	// key is gone before it is deleted: the key watch may not have shown a
	// key created moments ago.
	APIReader client.Reader

	// records and keys are the ApiKey controller's watches.
	records *keyRecords
	keys    *watchedKeys
}

// Reconcile deletes the record req names if its ApiKey no longer exists.
func (c *RecordCollector) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rec := &apikeysv1alpha1.ApiKeyRecord{}
	if err := c.APIReader.Get(ctx, req.NamespacedName, rec); err != nil {
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

// keyExists reports whether the ApiKey ref names still exists with ref's
// UID: as the key watch shows it or, if it does not, as the API server does
// (the watch may not have shown a key created moments ago).
func (c *RecordCollector) keyExists(ctx context.Context, ref apikeysv1alpha1.ApiKeyReference) (bool, error) {
	name := client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}
	if c.keys.has(name, ref.UID) {
		return true, nil
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
// each record created or changed while the operator runs whose key the key
// watch does not show, and, once at start, the records whose key the key
// watch does not show (orphans left while the operator was down). The
// records listed at start are not queued: a queue that held every record
// once keeps the memory of its peak, and only a record whose key is gone
// needs the collector.
func (c *RecordCollector) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		c.collectAtStart(ctx)
		return nil
	})); err != nil {
		return err
	}
	queue := &laterQueue{}
	c.keys.deleted = func(d digest, uid types.UID) {
		if c.records.hasListed() {
			queue.add(c.recordsOf(d, uid)...)
			return
		}
		// Until the records are listed, this asks the API server: not on
		// the key watch's goroutine, which would wait with it.
		go func() { queue.add(c.recordsOf(d, uid)...) }()
	}
	c.records.changed = func(rec *apikeysv1alpha1.ApiKeyRecord) {
		if !c.keys.has(keyOfRecord(rec), rec.Spec.ApiKey.UID) {
			queue.add(reconcile.Request{NamespacedName: types.NamespacedName{Name: rec.Name}})
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		WatchesRawSource(queue).
		Named("apikeyrecord-collector").
		Complete(c)
}

// collectAtStart reconciles, once the key and record watches have listed,
// every record whose key the key watch does not show by UID.
func (c *RecordCollector) collectAtStart(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx).WithName("apikeyrecord-collector")
	for _, watch := range []source.SyncingSource{c.keys, c.records} {
		if err := watch.WaitForSync(ctx); err != nil {
			log.Error(err, "Could not list ApiKeys and records; orphans are collected when the operator next starts")
			return
		}
	}
	keys := map[digest]bool{}
	c.keys.each(func(_ types.NamespacedName, s keyState) { keys[s.uid] = true })
	c.records.dropListed(func(uid digest) bool { return !keys[uid] })
	var orphans []string
	c.records.each(func(uid digest, refs []recordRef) {
		if !keys[uid] {
			for _, ref := range refs {
				orphans = append(orphans, ref.name())
			}
		}
	})
	for _, name := range orphans {
		if _, err := c.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Name: name}}); err != nil {
			log.Error(err, "Could not collect a record at start", "record", name)
		}
	}
}

// recordsOf names the records of a deleted ApiKey, whose UID has the
// digest d: those the record watch shows or, until it has listed, those
// the API server holds (if the deletion gave the UID; if it did not, a
// relisting, the watch has listed).
func (c *RecordCollector) recordsOf(d digest, uid types.UID) []reconcile.Request {
	var names []string
	if c.records.hasListed() || uid == "" {
		for _, ref := range c.records.of(d) {
			names = append(names, ref.name())
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var records apikeysv1alpha1.ApiKeyRecordList
		if err := c.APIReader.List(ctx, &records, client.MatchingFields{recordsByKeyUID: string(uid)}); err != nil {
			ctrl.Log.WithName("apikeyrecord-collector").Error(err,
				"Could not list the records of a deleted ApiKey; they are collected when the operator next starts", "uid", uid)
			return nil
		}
		for i := range records.Items {
			names = append(names, records.Items[i].Name)
		}
	}
	reqs := make([]reconcile.Request, len(names))
	for i, name := range names {
		reqs[i] = reconcile.Request{NamespacedName: types.NamespacedName{Name: name}}
	}
	return reqs
}

// laterQueue is a source of requests that may come before the controller
// that takes them starts (the watches that feed it start with the ApiKey
// controller): it keeps them until then.
type laterQueue struct {
	mu      sync.Mutex
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	pending []reconcile.Request
}

var _ source.Source = (*laterQueue)(nil)

func (l *laterQueue) add(reqs ...reconcile.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.queue == nil {
		l.pending = append(l.pending, reqs...)
		return
	}
	for _, req := range reqs {
		l.queue.Add(req)
	}
}

// Start hands the controller what came so far, and from now on each
// request as it comes.
func (l *laterQueue) Start(_ context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queue = queue
	for _, req := range l.pending {
		queue.Add(req)
	}
	l.pending = nil
	return nil
}

func (l *laterQueue) String() string {
	return "records of deleted ApiKeys and of unknown keys (watches)"
}
