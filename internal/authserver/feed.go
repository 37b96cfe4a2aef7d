package authserver

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// indexFeeder keeps the index in step with ApiKeyRecords, ApiKeys and the
// deletion of namespaces. It
// lists and watches them itself and hands every object to the index, which
// keeps only what it answers with: no informer cache holds a second copy,
// so a replica's memory per key is the index's entry. It does not share the
// controller's informers in a combined manager: the controller's cache is
// trimmed to what the controller reads, and the index to what it answers.
type indexFeeder struct {
	index *Index
	mgr   ctrl.Manager
}

var _ manager.LeaderElectionRunnable = (*indexFeeder)(nil)

// NeedLeaderElection is false: every replica keeps its own index.
func (f *indexFeeder) NeedLeaderElection() bool { return false }

// Start runs a reflector for records, one for keys and one for namespaces,
// marks the index synced once all have listed, and runs until ctx ends.
func (f *indexFeeder) Start(ctx context.Context) error {
	records, keys, namespaces := recordFeed(f.index), keyFeed(f.index), namespaceFeed(f.index)
	for _, feed := range []struct {
		name       string
		item, list runtime.Object
		store      toolscache.ReflectorStore
	}{
		{"auth index: apikeyrecords", &apikeysv1alpha1.ApiKeyRecord{}, &apikeysv1alpha1.ApiKeyRecordList{}, records},
		{"auth index: apikeys", &keyHeader{}, &keyHeaderList{}, keys},
		{"auth index: namespaces", &corev1.Namespace{}, &corev1.NamespaceList{}, namespaces},
	} {
		lw, err := f.listWatch(feed.item, feed.list)
		if err != nil {
			return err
		}
		r := toolscache.NewReflectorWithOptions(lw, feed.item, feed.store, toolscache.ReflectorOptions{Name: feed.name})
		go r.RunWithContext(ctx)
	}
	for _, listed := range []chan struct{}{records.listed, keys.listed, namespaces.listed} {
		select {
		case <-listed:
		case <-ctx.Done():
			return nil
		}
	}
	f.index.MarkSynced()
	ctrl.Log.WithName("authserver").Info("Token index synced", "tokens", f.index.Len())
	<-ctx.Done()
	return nil
}

// listWatch lists and watches, cluster-wide, objects like item, decoded
// into lists like list. ApiKeys are decoded as keyHeaders.
func (f *indexFeeder) listWatch(item, list runtime.Object) (*toolscache.ListWatch, error) {
	scheme := f.mgr.GetScheme()
	if _, ok := item.(*keyHeader); ok {
		scheme = keyHeaderScheme
	}
	gvk, err := apiutil.GVKForObject(item, scheme)
	if err != nil {
		return nil, err
	}
	mapping, err := f.mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	rc, err := apiutil.RESTClientForGVK(gvk, false, false, f.mgr.GetConfig(), serializer.NewCodecFactory(scheme), f.mgr.GetHTTPClient())
	if err != nil {
		return nil, err
	}
	return listWatchOf(rc, mapping.Resource.Resource, list), nil
}

func listWatchOf(rc rest.Interface, resource string, list runtime.Object) *toolscache.ListWatch {
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			out := list.DeepCopyObject()
			if err := rc.Get().Resource(resource).VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(out); err != nil {
				return nil, err
			}
			return out, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.Watch = true
			return rc.Get().Resource(resource).VersionedParams(&opts, metav1.ParameterCodec).Watch(ctx)
		},
	}
}

// feed is the index as a reflector's store of objects of type T: each event
// goes to one of the index's methods, and nothing else is kept.
type feed[T runtime.Object] struct {
	set, update, remove func(T)
	replace             func([]T)
	listed              chan struct{} // closed by the first listing
	// trim has the reflector keep only what the index reads of each object
	// as it arrives: its first listing holds every object at once.
	trim toolscache.TransformFunc
}

func (f *feed[T]) Transformer() toolscache.TransformFunc { return f.trim }

func (f *feed[T]) Add(obj any) error {
	if o, ok := obj.(T); ok {
		f.set(o)
	}
	return nil
}

func (f *feed[T]) Update(obj any) error {
	if o, ok := obj.(T); ok {
		f.update(o)
	}
	return nil
}

func (f *feed[T]) Delete(obj any) error {
	if o, ok := obj.(T); ok {
		f.remove(o)
	}
	return nil
}

func (f *feed[T]) Replace(list []any, _ string) error {
	objs := make([]T, 0, len(list))
	for _, obj := range list {
		if o, ok := obj.(T); ok {
			objs = append(objs, o)
		}
	}
	f.replace(objs)
	closeOnce(f.listed)
	return nil
}

func (f *feed[T]) Resync() error { return nil }

func recordFeed(ix *Index) *feed[*apikeysv1alpha1.ApiKeyRecord] {
	return &feed[*apikeysv1alpha1.ApiKeyRecord]{
		set:     ix.SetRecord,
		update:  ix.UpdateRecord,
		remove:  func(rec *apikeysv1alpha1.ApiKeyRecord) { ix.DeleteRecord(rec.Name) },
		replace: ix.ReplaceRecords,
		listed:  make(chan struct{}),
		trim:    trimRecord,
	}
}

func keyFeed(ix *Index) *feed[*keyHeader] {
	set := func(h *keyHeader) { ix.SetKey(h.apiKey()) }
	return &feed[*keyHeader]{
		set:    set,
		update: set,
		remove: func(h *keyHeader) { ix.DeleteKey(h.UID) },
		replace: func(list []*keyHeader) {
			keys := make([]*apikeysv1alpha1.ApiKey, len(list))
			for i, h := range list {
				keys[i] = h.apiKey()
			}
			ix.ReplaceKeys(keys)
		},
		listed: make(chan struct{}),
		trim:   trimKeyHeader,
	}
}

// keyHeader is an ApiKey as the index reads it: its metadata, which
// kube-apiserver writes or validates itself, and whether it is suspended.
// The key feed decodes ApiKeys as such, so that nothing else a key's
// writers put in it (a duration or a time that Go cannot read, stored
// before the CRD refused them, or by a future version) can fail the
// decoding of a listing, and stop revocations and suspensions reaching the
// index for every key.
type keyHeader struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              keyHeaderSpec `json:"spec,omitempty"`
}

// keyHeaderSpec is what the index reads of an ApiKey's spec.
type keyHeaderSpec struct {
	Suspended bool `json:"suspended,omitempty"`
}

// keyHeaderList is a list of ApiKeys decoded as keyHeaders.
type keyHeaderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []keyHeader `json:"items"`
}

func (h *keyHeader) DeepCopyObject() runtime.Object {
	c := *h
	h.DeepCopyInto(&c.ObjectMeta)
	return &c
}

func (l *keyHeaderList) DeepCopyObject() runtime.Object {
	c := *l
	l.DeepCopyInto(&c.ListMeta)
	c.Items = make([]keyHeader, len(l.Items))
	for i := range l.Items {
		c.Items[i] = *l.Items[i].DeepCopyObject().(*keyHeader)
	}
	return &c
}

// keyHeaderScheme decodes ApiKeys and their lists as keyHeaders.
var keyHeaderScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	s.AddKnownTypeWithName(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"), &keyHeader{})
	s.AddKnownTypeWithName(apikeysv1alpha1.GroupVersion.WithKind("ApiKeyList"), &keyHeaderList{})
	metav1.AddToGroupVersion(s, apikeysv1alpha1.GroupVersion)
	return s
}()

// apiKey is the ApiKey the index reads: identity, deletion and suspension.
func (h *keyHeader) apiKey() *apikeysv1alpha1.ApiKey {
	return &apikeysv1alpha1.ApiKey{ObjectMeta: indexedMeta(&h.ObjectMeta), Spec: apikeysv1alpha1.ApiKeySpec{Suspended: h.Spec.Suspended}}
}

// trimKeyHeader keeps of a listed key only what apiKey reads: the listing
// holds every key at once.
func trimKeyHeader(obj any) (any, error) {
	h, ok := obj.(*keyHeader)
	if !ok {
		return obj, nil
	}
	return &keyHeader{TypeMeta: h.TypeMeta, ObjectMeta: indexedMeta(&h.ObjectMeta), Spec: h.Spec}, nil
}

// namespaceFeed tells the index which namespaces are being deleted.
func namespaceFeed(ix *Index) *feed[*corev1.Namespace] {
	set := func(ns *corev1.Namespace) { ix.SetNamespace(ns.Name, !ns.DeletionTimestamp.IsZero()) }
	return &feed[*corev1.Namespace]{
		set:    set,
		update: set,
		remove: func(ns *corev1.Namespace) { ix.SetNamespace(ns.Name, false) },
		replace: func(list []*corev1.Namespace) {
			var deleting []string
			for _, ns := range list {
				if !ns.DeletionTimestamp.IsZero() {
					deleting = append(deleting, ns.Name)
				}
			}
			ix.ReplaceNamespaces(deleting)
		},
		listed: make(chan struct{}),
		trim:   cache.TransformStripManagedFields(),
	}
}

// closeOnce closes ch unless it is closed; only a reflector's goroutine calls
// it, so there is no race between the check and the close.
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// usageFlusher writes last-used times to the status of each used token's
// ApiKeyRecord, off the request path: each tick, at most one patch per
// record whose token was used since the last flush, and only if it moves
// status.lastUsedAt forward. The controller shows the newest on the ApiKey.
// Records' status is the one thing the auth server writes, and issuance
// never reads it. Replicas flush their own usage; the optimistic lock and
// the forward-only rule merge them, and a replica leaves alone a record
// written less than an interval ago (by another replica, most likely), so
// that a key used on every replica is written about once an interval, not
// once per replica (SPEC §7).
type usageFlusher struct {
	index  *Index
	client client.Client
	every  time.Duration
}

// NeedLeaderElection is false: every replica flushes what it saw.
func (u *usageFlusher) NeedLeaderElection() bool { return false }

// Start flushes every interval until ctx ends, then once more.
func (u *usageFlusher) Start(ctx context.Context) error {
	t := time.NewTicker(u.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last chance for this replica's uses: each goes in now.
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			u.flush(flushCtx, time.Now(), 0)
			cancel()
			return nil
		case now := <-t.C:
			u.flush(ctx, now, u.every)
		}
	}
}

// flush writes the uses not yet flushed, at now. A record that says a use
// later than quiet before now waits for a later tick (quiet 0: none waits).
func (u *usageFlusher) flush(ctx context.Context, now time.Time, quiet time.Duration) {
	log := ctrl.Log.WithName("authserver").WithName("usage")
	for _, use := range u.index.unflushedUses() {
		last := use.state.lastUsed.Load()
		switch {
		case use.usedAt >= last:
			// The record says as much already: another replica wrote it.
		case quiet > 0 && use.usedAt > now.Add(-quiet).Unix():
			continue // written within the interval: the use waits
		default:
			if err := u.flushOne(ctx, use, last); err != nil {
				log.V(1).Info("Could not record last use; will retry", "record", use.name, "error", err.Error())
				continue
			}
		}
		use.state.flushed.Store(last)
	}
}

// flushOne moves the record's status.lastUsedAt forward to last. It reads
// nothing: the patch carries the resourceVersion last seen, so a record
// written since (by another replica, say) is a conflict, retried next tick
// once the watch has shown that write. A record that is gone needs no
// flush.
func (u *usageFlusher) flushOne(ctx context.Context, use recordUse, last int64) error {
	patch := map[string]any{"status": map[string]any{"lastUsedAt": metav1.Unix(last, 0)}}
	if use.resourceVersion != "" {
		patch["metadata"] = map[string]any{"resourceVersion": use.resourceVersion}
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("encoding the last use of record %s: %w", use.name, err)
	}
	rec := &apikeysv1alpha1.ApiKeyRecord{ObjectMeta: metav1.ObjectMeta{Name: use.name}}
	return client.IgnoreNotFound(u.client.Status().Patch(ctx, rec, client.RawPatch(types.MergePatchType, body)))
}
