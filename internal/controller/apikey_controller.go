// Package controller issues API keys: it mints a token for each ApiKey, keeps
// only its hash in an ApiKeyRecord, and delivers the raw token once, into a
// Secret.
package controller

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
)

// Finalizer keeps an ApiKey until its records are gone, so a deleted key
// never leaves a hash behind that could still authenticate.
const Finalizer = apikeysv1alpha1.RecordsFinalizer

// ApiKeyReconciler issues tokens for ApiKeys and keeps their records in step
// with their specs.
type ApiKeyReconciler struct {
	client.Client

	// APIReader reads straight from the API server. Issuance decisions that
	// could mint a second token are confirmed with it, never with the cache.
	APIReader client.Reader

	// Recorder emits events on ApiKeys. Notes never contain a token.
	Recorder events.EventRecorder

	// Policy holds the rules a key must follow to get a token: expiry
	// bounds, forbidden groups, who may own a key, and the admission policy
	// that checks who created it.
	Policy *policy.Policy

	// Now returns the current time; tests may pin it. Defaults to time.Now.
	Now func() time.Time

	// MaxConcurrentReconciles is how many ApiKeys are reconciled at once
	// (one pass per key at a time, whatever the number). Defaults to 1.
	MaxConcurrentReconciles int

	// created are the records this process created that its cache may not
	// show yet.
	created createdRecords

	// secrets are the Secrets the controller delivered, as its watch of
	// them shows them (it keeps no cache of Secrets).
	secrets *deliveredSecrets

	// records indexes the cached records by key UID.
	records *keyRecords
}

// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeys,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeys/status,verbs=get;patch
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeys/finalizers,verbs=update
// deletecollection on records is no longer used; it stays for one release,
// so that the previous release's controller, still leader during a rolling
// update, can finalize keys with it.
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeyrecords,verbs=get;list;watch;create;patch;delete;deletecollection
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile runs the steps of one pass in order and stops at the first that
// fails; a single deferred status patch then records what the pass observed.
func (r *ApiKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	key := &apikeysv1alpha1.ApiKey{}
	if err := r.Get(ctx, req.NamespacedName, key); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !key.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, key)
	}
	// The finalizer goes on before any record exists, so deletion can never
	// miss one.
	if !controllerutil.ContainsFinalizer(key, Finalizer) {
		patch := client.MergeFrom(key.DeepCopy())
		controllerutil.AddFinalizer(key, Finalizer)
		if err := r.Patch(ctx, key, patch); err != nil {
			return ctrl.Result{}, err
		}
	}

	p := r.newPass(key)
	defer func() {
		result, retErr = r.finishPass(ctx, p, retErr)
	}()

	for _, step := range []func(context.Context, *pass) error{
		r.observeRecords,
		r.settleRotation,
		r.validate,
		r.issue,
		r.rotate,
		r.syncRecords,
		r.reconcileSecret,
		r.scheduleExpiry,
	} {
		if err := step(ctx, p); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

// finalize deletes every record of a deleting ApiKey, then lets it go. The
// Secret goes with the ApiKey through its owner reference.
func (r *ApiKeyReconciler) finalize(ctx context.Context, key *apikeysv1alpha1.ApiKey) error {
	if !controllerutil.ContainsFinalizer(key, Finalizer) {
		return nil
	}
	records, _, err := r.knownRecords(ctx, key, r.now())
	if err != nil {
		return err
	}
	if err := r.deleteAll(ctx, key, records); err != nil {
		return err
	}
	r.created.forget(key.UID, "")
	patch := client.MergeFrom(key.DeepCopy())
	controllerutil.RemoveFinalizer(key, Finalizer)
	return client.IgnoreNotFound(r.Patch(ctx, key, patch))
}

// deleteAll deletes records, each by name. Finalize passes those it knows:
// a deletecollection by label would have kube-apiserver match the selector
// against every record in the cluster, about 200 ms at 100k records for
// each deleted key. A record the cache has not shown yet is not missed:
// the auth server refuses the token of a key that is deleting or gone, and
// once the key is gone the record collector deletes the record.
func (r *ApiKeyReconciler) deleteAll(ctx context.Context, key *apikeysv1alpha1.ApiKey,
	records []apikeysv1alpha1.ApiKeyRecord) error {
	for i := range records {
		if err := r.deleteRecord(ctx, key, &records[i]); err != nil {
			return err
		}
	}
	return nil
}

func (r *ApiKeyReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager watches ApiKeys, the metadata (never the data) of the
// Secrets they own, and their records; beside it runs the RecordCollector,
// which deletes the records of keys that went without their finalizer.
func (r *ApiKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	meta, err := metadata.NewForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return err
	}
	r.secrets = newDeliveredSecrets(meta, r.cachedKeys)
	r.records = newKeyRecords()
	if err := (&RecordCollector{Client: r.Client, APIReader: r.APIReader, records: r.records}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.Add(expiries.readWhileRunning(mgr.GetCache())); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&apikeysv1alpha1.ApiKey{}).
		WatchesRawSource(r.secrets).
		WatchesRawSource(r.records.source(mgr.GetCache())).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("apikey").
		Complete(r)
}

// cachedKeys lists the ApiKeys in the cache.
func (r *ApiKeyReconciler) cachedKeys(ctx context.Context) ([]keyUID, error) {
	var keys apikeysv1alpha1.ApiKeyList
	if err := r.List(ctx, &keys, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	out := make([]keyUID, len(keys.Items))
	for i := range keys.Items {
		out[i] = keyUID{NamespacedName: client.ObjectKeyFromObject(&keys.Items[i]), UID: keys.Items[i].UID}
	}
	return out, nil
}

// secretMeta returns an empty metadata-only Secret, the form in which the
// controller reads Secrets: it never needs, caches or holds their data.
func secretMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}
