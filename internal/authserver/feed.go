package authserver

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// indexFeeder keeps the index in step with ApiKeyRecords and ApiKeys. It
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

// Start runs a reflector for records and one for keys, marks the index
// synced once both have listed, and runs until ctx ends.
func (f *indexFeeder) Start(ctx context.Context) error {
	records := &recordFeed{index: f.index, listed: make(chan struct{})}
	keys := &keyFeed{index: f.index, listed: make(chan struct{})}
	for _, feed := range []struct {
		name       string
		item, list runtime.Object
		store      toolscache.ReflectorStore
	}{
		{"auth index: apikeyrecords", &apikeysv1alpha1.ApiKeyRecord{}, &apikeysv1alpha1.ApiKeyRecordList{}, records},
		{"auth index: apikeys", &apikeysv1alpha1.ApiKey{}, &apikeysv1alpha1.ApiKeyList{}, keys},
	} {
		lw, err := f.listWatch(feed.item, feed.list)
		if err != nil {
			return err
		}
		r := toolscache.NewReflectorWithOptions(lw, feed.item, feed.store, toolscache.ReflectorOptions{Name: feed.name})
		go r.RunWithContext(ctx)
	}
	for _, listed := range []chan struct{}{records.listed, keys.listed} {
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
// into lists like list.
func (f *indexFeeder) listWatch(item, list runtime.Object) (*toolscache.ListWatch, error) {
	scheme := f.mgr.GetScheme()
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

// recordFeed is the index as a reflector's store of ApiKeyRecords.
type recordFeed struct {
	index  *Index
	listed chan struct{} // closed by the first listing
}

func (f *recordFeed) Add(obj any) error {
	if rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord); ok {
		f.index.SetRecord(rec)
	}
	return nil
}

func (f *recordFeed) Update(obj any) error {
	if rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord); ok {
		f.index.UpdateRecord(rec)
	}
	return nil
}

func (f *recordFeed) Delete(obj any) error {
	if rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord); ok {
		f.index.DeleteRecord(rec.Name)
	}
	return nil
}

func (f *recordFeed) Replace(list []any, _ string) error {
	records := make([]*apikeysv1alpha1.ApiKeyRecord, 0, len(list))
	for _, obj := range list {
		if rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord); ok {
			records = append(records, rec)
		}
	}
	f.index.ReplaceRecords(records)
	closeOnce(f.listed)
	return nil
}

func (f *recordFeed) Resync() error { return nil }

// keyFeed is the index as a reflector's store of ApiKeys.
type keyFeed struct {
	index  *Index
	listed chan struct{} // closed by the first listing
}

func (f *keyFeed) Add(obj any) error {
	if key, ok := obj.(*apikeysv1alpha1.ApiKey); ok {
		f.index.SetKey(key)
	}
	return nil
}

func (f *keyFeed) Update(obj any) error { return f.Add(obj) }

func (f *keyFeed) Delete(obj any) error {
	if key, ok := obj.(*apikeysv1alpha1.ApiKey); ok {
		f.index.DeleteKey(key.UID)
	}
	return nil
}

func (f *keyFeed) Replace(list []any, _ string) error {
	keys := make([]*apikeysv1alpha1.ApiKey, 0, len(list))
	for _, obj := range list {
		if key, ok := obj.(*apikeysv1alpha1.ApiKey); ok {
			keys = append(keys, key)
		}
	}
	f.index.ReplaceKeys(keys)
	closeOnce(f.listed)
	return nil
}

func (f *keyFeed) Resync() error { return nil }

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
// the forward-only rule merge them.
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
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			u.flush(flushCtx)
			cancel()
			return nil
		case <-t.C:
			u.flush(ctx)
		}
	}
}

func (u *usageFlusher) flush(ctx context.Context) {
	log := ctrl.Log.WithName("authserver").WithName("usage")
	for _, use := range u.index.unflushedUses() {
		last := use.state.lastUsed.Load()
		if err := u.flushOne(ctx, use, last); err != nil {
			log.V(1).Info("Could not record last use; will retry", "record", use.name, "error", err.Error())
			continue
		}
		use.state.flushed.Store(last)
	}
}

// flushOne moves the record's status.lastUsedAt forward to last, unless the
// record as last seen already says last or later (another replica wrote
// it). It reads nothing: the patch carries the resourceVersion last seen,
// so a record written since (by another replica, say) is a conflict,
// retried next tick once the watch has shown that write. A record that is
// gone needs no flush.
func (u *usageFlusher) flushOne(ctx context.Context, use recordUse, last int64) error {
	if use.usedAt >= last {
		return nil
	}
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
