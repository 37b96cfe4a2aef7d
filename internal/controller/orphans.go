package controller

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// recordsByKeyUID indexes records by the UID of their ApiKey.
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

// SetupWithManager reconciles every record (so a restart finds the orphans
// left while the operator was down) and, when an ApiKey is deleted, the
// records of that key.
func (c *RecordCollector) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &apikeysv1alpha1.ApiKeyRecord{}, recordsByKeyUID,
		func(obj client.Object) []string {
			return []string{obj.(*apikeysv1alpha1.ApiKeyRecord).Spec.ApiKey.UID}
		}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&apikeysv1alpha1.ApiKeyRecord{}).
		Watches(&apikeysv1alpha1.ApiKey{}, handler.Funcs{DeleteFunc: c.enqueueRecordsOf}).
		Named("apikeyrecord-collector").
		Complete(c)
}

// enqueueRecordsOf queues the records of a deleted ApiKey.
func (c *RecordCollector) enqueueRecordsOf(ctx context.Context, e event.DeleteEvent,
	q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	var records apikeysv1alpha1.ApiKeyRecordList
	if err := c.List(ctx, &records, client.MatchingFields{recordsByKeyUID: string(e.Object.GetUID())}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Could not list the records of a deleted ApiKey; they are collected on the next resync",
			"namespace", e.Object.GetNamespace(), "name", e.Object.GetName())
		return
	}
	for i := range records.Items {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: records.Items[i].Name}})
	}
}
