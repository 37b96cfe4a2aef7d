package controller

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	kjson "sigs.k8s.io/json"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// watchedKeys is what the controller keeps of ApiKeys, without an informer
// cache of them: for each ApiKey its watch shows, a digest of its UID, the
// resourceVersion last seen, the expiry its status reports and the instant
// its last pass asked to run again (deadlines.go), about 150 bytes a key
// where a trimmed cached ApiKey cost about 1.1 KB. Each change wakes the
// key, and each pass reads the key from kube-apiserver at that
// resourceVersion or later (a GET its watch cache serves), so a pass never
// sees an older key than the event that woke it; or it takes the object
// the watch kept for it (unread), which is that event's.
//
// It is a controller-runtime source: it starts with the controller (on the
// leader) and the controller waits for its first listing.
type watchedKeys struct {
	storeless
	client client.WithWatch
	// namespace and fields narrow what is watched; empty and nil: every ApiKey.
	namespace string
	fields    fields.Selector

	mu    sync.RWMutex
	keys  map[types.NamespacedName]keyState
	queue workqueue.TypedRateLimitingInterface[reconcile.Request]
	// unread holds ApiKeys as the watch showed them, for the pass they woke
	// to take instead of reading the key again:
	//   - the first listing's, until each key's first pass: that listing is
	//     the start-up read (at 100k keys, as many reads at the client's QPS
	//     would take minutes);
	//   - a key awaiting its first token, from each event that wakes it:
	//     bulk issuance then reads no key at all, and the stash holds only
	//     the keys waiting for a pass.
	// An entry goes at its key's next pass, at the controller's next write
	// of the key, or at the next event that does not replace it (a
	// deletion, the controller's own write, a key issued). At most
	// maxUnread events are kept.
	unread stash[types.NamespacedName, *apikeysv1alpha1.ApiKey]
	// deleted is told of each ApiKey that goes, by the digest of its UID
	// and, if the event gave it, the UID (the record collector's queue of
	// its records).
	deleted func(digest, types.UID)

	ctx context.Context // Start's, for the goroutines it starts

	// deadlines are the instants keys asked to be woken at.
	deadlines deadlineHeap
	sooner    chan struct{} // a deadline earlier than all others came
}

// keyState is what the controller keeps of one ApiKey.
type keyState struct {
	uid digest // digestOf(UID)
	// resourceVersion is the last one seen, 0 if it is not a number (a
	// pass then reads the newest).
	resourceVersion uint64
	// expiresAt is status.expiresAt in Unix seconds for an issued key that
	// is not being deleted, else 0 (apikey_expiration_timestamp_seconds).
	expiresAt int64
	// wakeAt is when the key's last pass asked to run again, in Unix
	// nanoseconds, or 0.
	wakeAt int64
}

var _ source.SyncingSource = (*watchedKeys)(nil)

func newWatchedKeys(c client.WithWatch, namespace string, selector fields.Selector) *watchedKeys {
	w := &watchedKeys{client: c, namespace: namespace, fields: selector,
		keys: map[types.NamespacedName]keyState{}, sooner: make(chan struct{}, 1)}
	w.storeless = newStoreless("ApiKeys", w.change, w.replaceWith)
	w.trim = trimListed
	return w
}

// trimListed is trimKey as the reflector's transform: it runs on the
// objects of a listing streamed as a watch (client-go calls a store's
// transform there only), which holds them all until it ends; keys kept
// from events and from a plain listing are trimmed where they are kept. Of
// a heavy key it keeps only what its state is made of, so that its pass
// reads it.
func trimListed(obj any) (any, error) {
	k, ok := obj.(*decodedKey)
	if !ok {
		return obj, nil
	}
	// An unreadable key's metadata is bounded as a heavy key's.
	if k.stateOnly || heavy(trimKey(&k.ApiKey)) {
		return k.state(), nil
	}
	return k, nil
}

// decodedKey is an ApiKey as the key watch decodes it: whole, or, when
// it holds something Go cannot read (a duration or a time stored before
// the CRD refused them, or a field whose type a later version changed),
// its metadata alone. Decoded whole, one such key would fail every listing
// of ApiKeys: the controller would issue, rotate and finalize nothing, for
// any tenant, and its manager would give up starting. Kept as its state, it only
// fails its own passes, which read it again.
type decodedKey struct {
	apikeysv1alpha1.ApiKey
	// stateOnly: only what the key's state is made of is left (a key that
	// could not be read whole, or was heavy): no pass may take it.
	stateOnly bool
}

// decodedKeyList is a list of ApiKeys decoded as decodedKeys.
type decodedKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []decodedKey `json:"items"`
}

// UnmarshalJSON decodes the whole key, or else its metadata alone.
func (k *decodedKey) UnmarshalJSON(data []byte) error {
	*k = decodedKey{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &k.ApiKey); err == nil {
		return nil
	}
	var meta struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &meta); err != nil {
		return err
	}
	*k = decodedKey{ApiKey: apikeysv1alpha1.ApiKey{TypeMeta: meta.TypeMeta, ObjectMeta: meta.ObjectMeta}, stateOnly: true}
	return nil
}

// state is what the key's state is made of, marked stateOnly.
func (k *decodedKey) state() *decodedKey {
	s := &decodedKey{stateOnly: true, ApiKey: apikeysv1alpha1.ApiKey{TypeMeta: k.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name, UID: k.UID,
			ResourceVersion: k.ResourceVersion, DeletionTimestamp: k.DeletionTimestamp}}}
	s.Status.RecordName, s.Status.ExpiresAt = k.Status.RecordName, k.Status.ExpiresAt
	return s
}

func (k *decodedKey) DeepCopyObject() runtime.Object {
	c := &decodedKey{stateOnly: k.stateOnly}
	k.DeepCopyInto(&c.ApiKey)
	return c
}

func (l *decodedKeyList) DeepCopyObject() runtime.Object {
	c := &decodedKeyList{TypeMeta: l.TypeMeta, Items: make([]decodedKey, len(l.Items))}
	l.DeepCopyInto(&c.ListMeta)
	for i := range l.Items {
		c.Items[i] = *l.Items[i].DeepCopyObject().(*decodedKey)
	}
	return c
}

// decodedKeyScheme decodes ApiKeys and their lists as decodedKeys: the
// key watch's client uses it.
var decodedKeyScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	s.AddKnownTypeWithName(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"), &decodedKey{})
	s.AddKnownTypeWithName(apikeysv1alpha1.GroupVersion.WithKind("ApiKeyList"), &decodedKeyList{})
	metav1.AddToGroupVersion(s, apikeysv1alpha1.GroupVersion)
	return s
}()

// heavyKeyBytes bounds the free-form parts of a key the watch keeps whole
// for its pass (unread). Its writers fill them: annotations (256 KiB),
// finalizers and owner references (no limit but the object's 1.5 MiB), the
// Secret's labels and annotations, condition messages (status writers),
// so a few hundred keys could otherwise hold the manager past its memory
// limit at start, for every tenant. A key past it is read by its pass.
const heavyKeyBytes = 32 << 10

// heavy reports whether key's free-form parts come to more than
// heavyKeyBytes.
func heavy(key *apikeysv1alpha1.ApiKey) bool {
	n := len(key.Spec.Description)
	for _, m := range []map[string]string{key.Annotations, key.Labels, key.Spec.Secret.Annotations, key.Spec.Secret.Labels} {
		for k, v := range m {
			n += len(k) + len(v)
		}
	}
	for _, list := range [][]string{key.Finalizers, key.Spec.Scopes, key.Spec.Audiences} {
		for _, v := range list {
			n += len(v)
		}
	}
	if o := key.Spec.Owner; o != nil {
		for _, g := range o.Groups {
			n += len(g)
		}
	}
	for _, r := range key.OwnerReferences {
		n += len(r.APIVersion) + len(r.Kind) + len(r.Name) + len(r.UID)
	}
	for _, c := range key.Status.Conditions {
		n += len(c.Message)
	}
	return n > heavyKeyBytes
}

// trimKey drops, from a key kept whole for a pass, what no pass reads: its
// managed fields, and the annotation in which client-side `kubectl apply`
// (and Argo CD's default sync) keeps a copy of the whole manifest. A pass
// writes a key only by patches (status, finalizer), which leave alone an
// annotation they never saw.
func trimKey(key *apikeysv1alpha1.ApiKey) *apikeysv1alpha1.ApiKey {
	key.ManagedFields = nil
	delete(key.Annotations, corev1.LastAppliedConfigAnnotation)
	return key
}

// get returns what the watch has shown of the ApiKey name, if anything.
// Without a watch (a reconciler not set up with a manager) it shows
// nothing.
func (w *watchedKeys) get(name types.NamespacedName) (keyState, bool) {
	if w == nil {
		return keyState{}, false
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	s, ok := w.keys[name]
	return s, ok
}

// maxUnread bounds the keys awaiting their first token that the watch
// keeps for their passes (about 2 KB each, trimmed, and never more than
// heavyKeyBytes of free-form parts): past it, as while the first listing
// is still being worked through, a pass reads its key.
const maxUnread = 10_000

// dropShown forgets the object kept for name: the controller is about to
// write the key, and the object is older than that write.
func (w *watchedKeys) dropShown(name types.NamespacedName) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.unread.drop(name)
}

// takeShown returns, once, the ApiKey name as the watch last showed it, if
// it kept that object (see unread).
func (w *watchedKeys) takeShown(name types.NamespacedName) *apikeysv1alpha1.ApiKey {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unread.take(name)
}

// has reports whether the watch shows the ApiKey name with UID uid.
func (w *watchedKeys) has(name types.NamespacedName, uid string) bool {
	s, ok := w.get(name)
	return ok && s.uid == digestOf(uid)
}

// each calls f with every key the watch shows, under its read lock: f
// must not call back into w.
func (w *watchedKeys) each(f func(types.NamespacedName, keyState)) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	for name, s := range w.keys {
		f(name, s)
	}
}

// uids lists the keys the watch shows, with the digests of their UIDs.
func (w *watchedKeys) uids() []keyUID {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make([]keyUID, 0, len(w.keys))
	for name, s := range w.keys {
		out = append(out, keyUID{NamespacedName: name, uid: s.uid})
	}
	return out
}

// Start runs the watch until ctx ends, waking keys through queue.
func (w *watchedKeys) Start(ctx context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	w.ctx, w.queue = ctx, queue
	lw := listWatch(w.client, &decodedKeyList{}, client.ListOptions{Namespace: w.namespace, FieldSelector: w.fields})
	w.run(ctx, lw, &decodedKey{})
	go w.runDeadlines(ctx)
	return nil
}

// change takes a key added, changed or deleted: it updates the key's state
// and wakes it.
func (w *watchedKeys) change(obj any, deleted bool) error {
	k, ok := obj.(*decodedKey)
	if !ok {
		return nil
	}
	key := &k.ApiKey
	name := types.NamespacedName{Namespace: shared.intern(key.Namespace), Name: key.Name}
	w.mu.Lock()
	// Asked under the lock: a write ending meanwhile may wake the key, and
	// its pass must then find this event's state. A deletion is never the
	// controller's write, but ends the wait for one.
	own := w.own.caused("ApiKey", key.Namespace, key.Name, key.ResourceVersion) && !deleted
	if deleted {
		delete(w.keys, name)
	} else {
		w.keys[name] = stateOf(key).after(w.keys[name])
	}
	if !deleted && !own && !k.stateOnly && awaitsFirstToken(key) && !heavy(trimKey(key)) && len(w.unread.m) < maxUnread {
		w.unread.put(name, key)
	} else {
		w.unread.drop(name)
	}
	w.mu.Unlock()
	if own {
		return nil
	}
	w.queue.Add(reconcile.Request{NamespacedName: name})
	if deleted && w.deleted != nil {
		w.deleted(digestOf(string(key.UID)), key.UID)
	}
	return nil
}

// replaceWith takes a listing: the first at start, whose keys all get a
// pass behind any key that changes meanwhile (as controller-runtime queues
// an informer's first listing), and later ones after the watch broke off,
// which wake the keys that changed, came or went in between.
func (w *watchedKeys) replaceWith(list []any, first bool) error {
	keys := make(map[types.NamespacedName]keyState, len(list))
	var listed map[types.NamespacedName]*apikeysv1alpha1.ApiKey
	if first {
		listed = make(map[types.NamespacedName]*apikeysv1alpha1.ApiKey, len(list))
	}
	for _, obj := range list {
		if k, ok := obj.(*decodedKey); ok {
			key := &k.ApiKey
			name := types.NamespacedName{Namespace: shared.intern(key.Namespace), Name: key.Name}
			keys[name] = stateOf(key)
			if first && !k.stateOnly && !heavy(trimKey(key)) {
				listed[name] = key
			}
		}
	}
	w.mu.Lock()
	old := w.keys
	for name, s := range keys {
		keys[name] = s.after(old[name])
	}
	w.keys = keys
	w.unread.fill(listed)
	w.mu.Unlock()
	if first {
		w.queueFirstListing(keys)
		return nil
	}
	w.wakeChanged(old, keys)
	return nil
}

// startUpBatch is how many start-up passes the key watch keeps queued at a
// time. The queue's maps keep the size of their peak: queueing every key
// at once left about 120 bytes a key behind once the backlog had drained
// (measured at 100k keys).
const startUpBatch = 256

// queueFirstListing queues every key listed at start, a batch at a time,
// each behind any key that changes meanwhile when the queue has
// priorities. The first batch is queued at once; another follows whenever
// fewer than half a batch wait, so at most one and a half batches do.
func (w *watchedKeys) queueFirstListing(keys map[types.NamespacedName]keyState) {
	names := make([]types.NamespacedName, 0, len(keys))
	for name := range keys {
		names = append(names, name)
	}
	names = w.queueBatch(names)
	if len(names) == 0 {
		return
	}
	ctx := w.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for len(names) > 0 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if w.queue.Len() < startUpBatch/2 {
				names = w.queueBatch(names)
			}
		}
	}()
}

// queueBatch queues up to startUpBatch of names at low priority and returns
// the rest.
func (w *watchedKeys) queueBatch(names []types.NamespacedName) []types.NamespacedName {
	low := priorityqueue.AddOpts{Priority: new(handler.LowPriority)}
	pq, isPriority := w.queue.(priorityqueue.PriorityQueue[reconcile.Request])
	n := min(startUpBatch, len(names))
	for _, name := range names[:n] {
		if isPriority {
			pq.AddWithOpts(low, reconcile.Request{NamespacedName: name})
		} else {
			w.queue.Add(reconcile.Request{NamespacedName: name})
		}
	}
	return names[n:]
}

// wakeChanged wakes the keys that came, changed or went between two
// listings, and tells the record collector of those that went.
func (w *watchedKeys) wakeChanged(old, now map[types.NamespacedName]keyState) {
	for name, s := range now {
		if was, ok := old[name]; !ok || was != s {
			w.queue.Add(reconcile.Request{NamespacedName: name})
		}
	}
	for name, was := range old {
		if s, ok := now[name]; !ok || s.uid != was.uid {
			w.queue.Add(reconcile.Request{NamespacedName: name})
			if w.deleted != nil {
				w.deleted(was.uid, "")
			}
		}
	}
}

// after carries over what was knew of the same key (its pass's deadline),
// not what it knew of a key of the same name with another UID.
func (s keyState) after(was keyState) keyState {
	if was.uid == s.uid {
		s.wakeAt = was.wakeAt
	}
	return s
}

// awaitsFirstToken reports whether key, as shown, has never been issued a
// token and is not going: its next pass will most likely write.
func awaitsFirstToken(key *apikeysv1alpha1.ApiKey) bool {
	return key.Status.RecordName == "" && key.DeletionTimestamp == nil
}

func stateOf(key *apikeysv1alpha1.ApiKey) keyState {
	s := keyState{uid: digestOf(string(key.UID))}
	s.resourceVersion = versionOf(key.ResourceVersion)
	if key.DeletionTimestamp == nil && key.Status.RecordName != "" && key.Status.ExpiresAt != nil {
		s.expiresAt = key.Status.ExpiresAt.Unix()
	}
	return s
}
