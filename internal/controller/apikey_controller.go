// Package controller issues API keys: it mints a token for each ApiKey, keeps
// only its hash in an ApiKeyRecord, and delivers the raw token once, into a
// Secret.
package controller

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
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

	// OwnerRuleRecheck is how soon a personal key whose rotation waits for
	// the owner rule looks at the rule again (nothing watches it). Defaults
	// to a minute; a rule waiting only for its policy's status to be
	// written is looked at again within 5s.
	OwnerRuleRecheck time.Duration
	// unpinnedSlack replaces defaultUnpinnedSlack when set (tests).
	unpinnedSlack time.Duration

	// WatchNamespace and WatchFields narrow the ApiKeys the controller
	// watches and reconciles (tests run several controllers on one API
	// server); by default, every ApiKey.
	WatchNamespace string
	WatchFields    fields.Selector

	// created are the records this process created that its cache may not
	// show yet.
	created createdRecords

	// secrets are the Secrets the controller delivered, as its watch of
	// them shows them (it keeps no cache of Secrets).
	secrets *deliveredSecrets

	// records are the records of each key, as the controller's watch of
	// them shows them (it keeps no cache of records: a pass reads them).
	records *keyRecords

	// keys are the ApiKeys the controller watches, as its watch shows them
	// (it keeps no cache of ApiKeys: each pass reads its key).
	keys *watchedKeys

	// own are the writes of the controller's passes whose events its
	// watches have not shown yet.
	own *ownWrites
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
	ctx = withPass(ctx, req.NamespacedName) // its writes are its own (ownWrites)
	key, err := r.getKey(ctx, req.NamespacedName)
	if key == nil || err != nil {
		return ctrl.Result{}, err
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

// getKey reads the ApiKey a pass is for, nil if it is gone: from
// kube-apiserver, at least as new as the watch last showed it (a read its
// watch cache serves), or, in a start-up pass and for a key awaiting its
// first token, as the watch showed it; in a reconciler without a watch,
// through its client. A key the
// watch has not shown gets no pass: the watch wakes it once it does.
func (r *ApiKeyReconciler) getKey(ctx context.Context, name types.NamespacedName) (*apikeysv1alpha1.ApiKey, error) {
	key := &apikeysv1alpha1.ApiKey{}
	var err error
	if r.keys == nil {
		err = r.Get(ctx, name, key)
	} else if seen, ok := r.keys.get(name); !ok {
		return nil, nil
	} else if shown := r.keys.takeShown(name); shown != nil {
		return shown, nil
	} else {
		err = r.APIReader.Get(ctx, name, key, atLeast(seen.resourceVersion))
	}
	if err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return key, nil
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

// SetupWithManager watches ApiKeys, their records (keeping a few fields of
// each, not the objects) and the metadata (never the data) of the Secrets
// they own (a rotation's pass reads one Secret's data only to tell whether
// its token arrived: holdsToken); beside it runs the RecordCollector, which
// deletes the records of keys that went without their finalizer.
func (r *ApiKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	meta, err := metadata.NewForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return err
	}
	watcher, err := client.NewWithWatch(mgr.GetConfig(),
		client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), HTTPClient: mgr.GetHTTPClient()})
	if err != nil {
		return err
	}
	// The key watch decodes ApiKeys as decodedKeys (keywatch.go).
	keyWatcher, err := client.NewWithWatch(mgr.GetConfig(),
		client.Options{Scheme: decodedKeyScheme, Mapper: mgr.GetRESTMapper(), HTTPClient: mgr.GetHTTPClient()})
	if err != nil {
		return err
	}
	r.own = newOwnWrites(func(key types.NamespacedName) { r.keys.queue.Add(ctrl.Request{NamespacedName: key}) })
	r.keys = newWatchedKeys(keyWatcher, r.WatchNamespace, r.WatchFields)
	r.Client = notingWrites{Client: r.Client, own: r.own, keys: r.keys}
	r.secrets = newDeliveredSecrets(meta, r.keys.uids)
	r.records = newKeyRecords(watcher, r.keys.uids)
	r.keys.own, r.secrets.own, r.records.own = r.own, r.own, r.own
	// A record the watch shows needs no vouching for by this process.
	r.records.seen = func(rec *apikeysv1alpha1.ApiKeyRecord) { r.created.forget(types.UID(rec.Spec.ApiKey.UID), rec.Name) }
	if err := (&RecordCollector{Client: r.Client, APIReader: r.APIReader, records: r.records, keys: r.keys}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.Add(expiries.readWhileRunning(r.keys)); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		WatchesRawSource(r.keys).
		WatchesRawSource(r.secrets).
		WatchesRawSource(r.records).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("apikey").
		Complete(r)
}

// secretMeta returns an empty metadata-only Secret, the form in which the
// controller reads Secrets: it never caches or keeps their data, and reads
// it only where holdsToken must tell whether a rotated token arrived.
func secretMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}
