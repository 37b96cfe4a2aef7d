package controller

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// watchedKey is an ApiKey in team-payments as the watch decodes it.
func watchedKey(name string, uid types.UID, rv string) *decodedKey {
	return &decodedKey{ApiKey: apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team-payments", Name: name, UID: uid,
		ResourceVersion: rv}}}
}

// TestWatchedKeysEvents checks what each event keeps and whom it wakes:
// the key itself, and, when a key goes, the record collector (by UID),
// including keys that went while the watch was broken off.
func TestWatchedKeysEvents(t *testing.T) {
	w := newWatchedKeys(nil, "", nil)
	w.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer w.queue.ShutDown()
	var gone []string
	uids := map[digest]string{}
	for _, uid := range []string{"uid-a", "uid-b", "uid-b2", "uid-c", "uid-i"} {
		uids[digestOf(uid)] = uid
	}
	w.deleted = func(d digest, _ types.UID) { gone = append(gone, uids[d]) }
	expiresAt := metav1.NewTime(time.Date(2031, 3, 14, 0, 0, 0, 0, time.UTC))
	issued := watchedKey("issued", "uid-i", "12")
	issued.Status.RecordName, issued.Status.ExpiresAt = "sha256-00", &expiresAt
	step := eventSteps(t, w.queue, &gone)

	step("first listing", func() error {
		return w.Replace([]any{watchedKey("a", "uid-a", "10"), watchedKey("b", "uid-b", "11")}, "11")
	}, []string{"a", "b"}, nil)
	if err := w.WaitForSync(t.Context()); err != nil {
		t.Fatal(err)
	}
	step("added", func() error { return w.Add(issued) }, []string{"issued"}, nil)
	got, ok := w.get(types.NamespacedName{Namespace: "team-payments", Name: "issued"})
	if want := (keyState{uid: digestOf("uid-i"), resourceVersion: 12, expiresAt: expiresAt.Unix()}); !ok || got != want {
		t.Errorf("kept %+v, %v; want %+v", got, ok, want)
	}
	if opts := atLeast(got.resourceVersion); opts.Raw == nil || opts.Raw.ResourceVersion != "12" {
		t.Errorf("a pass would read %+v, want resourceVersion 12 or later", opts.Raw)
	}
	deleting := issued.DeepCopyObject().(*decodedKey)
	deleting.ResourceVersion, deleting.DeletionTimestamp = "13", &expiresAt
	step("being deleted", func() error { return w.Update(deleting) }, []string{"issued"}, nil)
	if got, _ := w.get(types.NamespacedName{Namespace: "team-payments", Name: "issued"}); got.expiresAt != 0 {
		t.Errorf("a deleting key still reports its expiry %d", got.expiresAt)
	}
	step("deleted", func() error { return w.Delete(deleting) }, []string{"issued"}, []string{"uid-i"})
	if w.has(types.NamespacedName{Namespace: "team-payments", Name: "issued"}, "uid-i") {
		t.Error("a deleted key is still shown")
	}

	// The watch broke off: meanwhile a changed, b was deleted and created
	// again (a new UID), and c came.
	step("relisting", func() error {
		return w.Replace([]any{watchedKey("a", "uid-a", "20"), watchedKey("b", "uid-b2", "21"), watchedKey("c", "uid-c", "22")}, "22")
	}, []string{"a", "b", "c"}, []string{"uid-b"})
	step("relisting with no change", func() error {
		return w.Replace([]any{watchedKey("a", "uid-a", "20"), watchedKey("b", "uid-b2", "21"), watchedKey("c", "uid-c", "22")}, "22")
	}, nil, nil)
	step("relisting after c went", func() error {
		return w.Replace([]any{watchedKey("a", "uid-a", "20"), watchedKey("b", "uid-b2", "21")}, "23")
	}, []string{"c"}, []string{"uid-c"})
	if !w.has(types.NamespacedName{Namespace: "team-payments", Name: "b"}, "uid-b2") ||
		w.has(types.NamespacedName{Namespace: "team-payments", Name: "b"}, "uid-b") {
		t.Error("the key b is not shown with its new UID only")
	}
}

// eventSteps returns a step runner for a watch's events: each step does
// something to the watch, then checks the keys it woke on q and what it
// told the record collector through *told (reset before each step).
func eventSteps(t *testing.T, q workqueue.TypedRateLimitingInterface[reconcile.Request],
	told *[]string) func(name string, do func() error, wantWoken, wantTold []string) {
	return func(name string, do func() error, wantWoken, wantTold []string) {
		t.Helper()
		*told = nil
		if err := do(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := woken(q); !slices.Equal(got, wantWoken) {
			t.Errorf("%s: woke %v, want %v", name, got, wantWoken)
		}
		slices.Sort(*told)
		if !slices.Equal(*told, wantTold) {
			t.Errorf("%s: told the collector of %v, want %v", name, *told, wantTold)
		}
	}
}

// TestWatchedKeysResourceVersion checks that a resourceVersion the watch
// cannot read as a number has a pass read the newest key, not one at 0.
func TestWatchedKeysResourceVersion(t *testing.T) {
	s := stateOf(&watchedKey("a", "uid-a", "not-a-number").ApiKey)
	if opts := atLeast(s.resourceVersion); opts.Raw != nil && opts.Raw.ResourceVersion != "" {
		t.Errorf("a pass would read at resourceVersion %q", opts.Raw.ResourceVersion)
	}
}

// TestLaterQueueBeforeStart checks that the record collector misses no
// request that came before it started: the watches may list and lose keys
// first.
func TestLaterQueueBeforeStart(t *testing.T) {
	l := &laterQueue{}
	l.add(reconcile.Request{NamespacedName: types.NamespacedName{Name: "early"}})
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	if err := l.Start(t.Context(), q); err != nil {
		t.Fatal(err)
	}
	l.add(reconcile.Request{NamespacedName: types.NamespacedName{Name: "late"}})
	if got, want := woken(q), []string{"early", "late"}; !slices.Equal(got, want) {
		t.Errorf("queued %v, want %v", got, want)
	}
}

// TestWatchedKeysFirstListingInBatches checks that every key listed at
// start gets a pass, with no more than one and a half batches queued at a
// time (a queue holding every key once keeps the memory of that peak).
func TestWatchedKeysFirstListingInBatches(t *testing.T) {
	w := newWatchedKeys(nil, "", nil)
	w.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer w.queue.ShutDown()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w.ctx = ctx
	const keys = 5*startUpBatch + 7
	list := make([]any, keys)
	for i := range list {
		list[i] = watchedKey(fmt.Sprint("key-", i), types.UID(fmt.Sprint("uid-", i)), "1")
	}
	if err := w.Replace(list, "1"); err != nil {
		t.Fatal(err)
	}
	seen, most := map[string]bool{}, 0
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < keys && time.Now().Before(deadline) {
		most = max(most, w.queue.Len())
		for w.queue.Len() > 0 {
			req, _ := w.queue.Get()
			w.queue.Done(req)
			seen[req.Name] = true
		}
		runtime.Gosched()
	}
	if len(seen) != keys {
		t.Errorf("%d of %d listed keys were queued", len(seen), keys)
	}
	if most > startUpBatch+startUpBatch/2 {
		t.Errorf("%d keys queued at once, want at most %d", most, startUpBatch+startUpBatch/2)
	}
}

// TestWatchedKeysKeepWhatAPassWillRead checks which ApiKeys the watch keeps
// for the pass it wakes, so that the pass reads nothing: a key awaiting its
// first token as its newest event showed it, once; not an issued key, a
// deleted one, or one whose newest event is the controller's own write.
func TestWatchedKeysKeepWhatAPassWillRead(t *testing.T) {
	w := newWatchedKeys(nil, "", nil)
	w.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer w.queue.ShutDown()
	w.own = newOwnWrites(func(types.NamespacedName) {})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Replace(nil, "1"))
	name := types.NamespacedName{Namespace: "team-payments", Name: "new"}
	shown := func(what, wantRV string) {
		t.Helper()
		got := w.takeShown(name)
		switch {
		case wantRV == "" && got != nil:
			t.Errorf("%s: a pass would take the key at %s, want a read", what, got.ResourceVersion)
		case wantRV != "" && (got == nil || got.ResourceVersion != wantRV):
			t.Errorf("%s: a pass would take %v, want the key at %s", what, got, wantRV)
		case wantRV != "" && w.takeShown(name) != nil:
			t.Errorf("%s: the key was kept for a second pass", what)
		}
	}

	created := watchedKey("new", "uid-new", "2")
	created.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	created.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: "{}", apikeysv1alpha1.RotateAnnotation: "a"}
	must(w.Add(created))
	if got := w.unread.m[name]; got == nil || got.ManagedFields != nil || len(got.Annotations) != 1 {
		t.Errorf("kept %+v, want the key without its managed fields and kubectl's copy of it", got)
	}
	shown("created", "2")

	must(w.Add(watchedKey("new", "uid-new", "3")))
	must(w.Update(watchedKey("new", "uid-new", "4")))
	shown("edited before its pass", "4")

	must(w.Update(watchedKey("new", "uid-new", "5")))
	patched := watchedKey("new", "uid-new", "")
	w.own.begin(name, &patched.ApiKey)
	patched.ResourceVersion = "6"
	w.own.end(&patched.ApiKey, nil)
	must(w.Update(patched))
	shown("the controller's own write came after an edit", "")

	must(w.Update(watchedKey("new", "uid-new", "6")))
	writes := notingWrites{own: w.own, keys: w}
	finalizing := &watchedKey("new", "uid-new", "6").ApiKey
	must(writes.write(withPass(t.Context(), name), finalizing, func() error {
		finalizing.ResourceVersion = "7" // its event has not come yet
		return nil
	}))
	if w.unread.m[name] != nil {
		t.Error("the controller wrote the key, and the key it kept from before stayed")
	}
	w.own.forget()

	must(w.Update(watchedKey("new", "uid-new", "7")))
	patching := &watchedKey("new", "uid-new", "7").ApiKey
	must(writes.write(withPass(t.Context(), name), patching, func() error {
		// An event that comes while the write is in flight is held, and
		// kept for no pass: the write's end decides whom it wakes.
		must(w.Update(watchedKey("new", "uid-new", "8")))
		patching.ResourceVersion = "9"
		return nil
	}))
	shown("the controller wrote the key after an edit", "")

	issued := watchedKey("new", "uid-new", "10")
	issued.Status.RecordName = "sha256-00"
	must(w.Update(issued))
	shown("issued", "")

	must(w.Update(watchedKey("new", "uid-new", "11")))
	must(w.Delete(watchedKey("new", "uid-new", "11")))
	shown("deleted", "")
	if w.unread.m != nil {
		t.Errorf("the stash keeps its map after its last key went: %v", w.unread.m)
	}
}

// TestWatchedKeysKeepAtMostMaxUnread checks the bound on the keys kept
// from events: past it, a pass reads its key.
func TestWatchedKeysKeepAtMostMaxUnread(t *testing.T) {
	w := newWatchedKeys(nil, "", nil)
	w.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer w.queue.ShutDown()
	if err := w.Replace(nil, "1"); err != nil {
		t.Fatal(err)
	}
	for i := range maxUnread + 1 {
		if err := w.Add(watchedKey(fmt.Sprint("bulk-", i), types.UID(fmt.Sprint("uid-bulk-", i)), "2")); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(w.unread.m); n != maxUnread {
		t.Errorf("kept %d keys for their passes, want at most %d", n, maxUnread)
	}
}

// TestWatchedKeysTrim checks what the key watch's reflector keeps of an
// ApiKey as it arrives: not its managed fields, nor the copy of its
// manifest that client-side kubectl apply keeps in an annotation; every
// other annotation (the rotation request among them), which a pass reads.
func TestWatchedKeysTrim(t *testing.T) {
	w := newWatchedKeys(nil, "", nil)
	key := watchedKey("applied", "uid-applied", "1")
	key.Annotations = map[string]string{
		corev1.LastAppliedConfigAnnotation: `{"apiVersion":"apikeys.dev/v1alpha1","kind":"ApiKey"}`,
		apikeysv1alpha1.RotateAnnotation:   "now",
	}
	key.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl-client-side-apply"}}
	got, err := w.Transformer()(key)
	if err != nil {
		t.Fatal(err)
	}
	kept := got.(*decodedKey)
	if kept.ManagedFields != nil || len(kept.Annotations) != 1 || kept.Annotations[apikeysv1alpha1.RotateAnnotation] != "now" {
		t.Errorf("kept annotations %v and managed fields %v", kept.Annotations, kept.ManagedFields)
	}
}

// TestWatchedKeysKeepNoHeavyKey checks that a key whose free-form parts
// (annotations, finalizers, condition messages…) are heavy is kept as its
// state alone, from a listing streamed through the transform and from an
// event, and is left for its pass to read; a light one is kept whole.
func TestWatchedKeysKeepNoHeavyKey(t *testing.T) {
	w := newWatchedKeys(nil, "", nil)
	w.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer w.queue.ShutDown()
	heavyKey := func(name string, uid types.UID) *decodedKey {
		k := watchedKey(name, uid, "1")
		k.Annotations = map[string]string{"example.com/pad": strings.Repeat("x", 40<<10)}
		return k
	}
	name := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "team-payments", Name: n} }

	transform := w.Transformer()
	listed := make([]any, 0, 2)
	for _, k := range []*decodedKey{heavyKey("heavy", "uid-heavy"), watchedKey("light", "uid-light", "2")} {
		obj, err := transform(k)
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, obj)
	}
	if got := listed[0].(*decodedKey); len(got.Annotations) != 0 || got.UID != "uid-heavy" || !got.stateOnly {
		t.Errorf("the listing holds the heavy key with %d annotations, UID %q", len(got.Annotations), got.UID)
	}
	if err := w.Replace(listed, "2"); err != nil {
		t.Fatal(err)
	}
	if !w.has(name("heavy"), "uid-heavy") || !w.has(name("light"), "uid-light") {
		t.Error("a listed key is not shown")
	}
	if got := w.takeShown(name("heavy")); got != nil {
		t.Error("the heavy key, stripped, was kept for its pass")
	}
	if got := w.takeShown(name("light")); got == nil {
		t.Error("the light key was not kept for its pass")
	}

	if err := w.Add(heavyKey("heavy-event", "uid-heavy-event")); err != nil {
		t.Fatal(err)
	}
	if got := w.takeShown(name("heavy-event")); got != nil {
		t.Error("a heavy key awaiting its first token was kept from its event")
	}
	if err := w.Add(watchedKey("light-event", "uid-light-event", "3")); err != nil {
		t.Fatal(err)
	}
	if got := w.takeShown(name("light-event")); got == nil {
		t.Error("a light key awaiting its first token was not kept from its event")
	}
}

// decodedListing is a listing of two ApiKeys, the second holding a
// duration and a time Go cannot read.
const decodedListing = `{"apiVersion":"apikeys.dev/v1alpha1","kind":"ApiKeyList","metadata":{"resourceVersion":"9"},"items":[
	{"apiVersion":"apikeys.dev/v1alpha1","kind":"ApiKey",
	 "metadata":{"namespace":"team-payments","name":"readable","uid":"uid-r","resourceVersion":"7"},
	 "spec":{"ttl":"720h","scopes":["links:read"]},"status":{"recordName":"ak-1","expiresAt":"2030-01-01T00:00:00Z"}},
	{"apiVersion":"apikeys.dev/v1alpha1","kind":"ApiKey",
	 "metadata":{"namespace":"team-payments","name":"unreadable","uid":"uid-u","resourceVersion":"8"},
	 "spec":{"ttl":"3000000h"},"status":{"issuedAt":"2030-01-01T00:00:00z"}}]}`

// decodeListing decodes decodedListing as the key watch's client does.
func decodeListing(t *testing.T) (readable, unreadable *decodedKey) {
	t.Helper()
	obj, _, err := serializer.NewCodecFactory(decodedKeyScheme).UniversalDeserializer().Decode([]byte(decodedListing), nil, nil)
	if err != nil {
		t.Fatalf("the listing failed to decode: %v", err)
	}
	keys, ok := obj.(*decodedKeyList)
	if !ok || len(keys.Items) != 2 {
		t.Fatalf("decoded %T, want a decodedKeyList of 2", obj)
	}
	return &keys.Items[0], &keys.Items[1]
}

// TestDecodedKeys checks how the key watch decodes ApiKeys: whole when Go
// can read them, else their metadata alone, marked so that no pass takes
// it, instead of failing the listing that holds them.
func TestDecodedKeys(t *testing.T) {
	readable, unreadable := decodeListing(t)
	if readable.stateOnly || readable.Spec.TTL == nil || readable.Spec.TTL.Duration != 720*time.Hour || readable.Status.ExpiresAt == nil {
		t.Errorf("the readable key was not decoded whole: stateOnly %t, spec %+v", readable.stateOnly, readable.Spec)
	}
	if !unreadable.stateOnly || unreadable.Name != "unreadable" || unreadable.UID != "uid-u" || unreadable.ResourceVersion != "8" {
		t.Errorf("the unreadable key: stateOnly %t, metadata %s/%s %s %s", unreadable.stateOnly,
			unreadable.Namespace, unreadable.Name, unreadable.UID, unreadable.ResourceVersion)
	}
}

// TestWatchedKeysShowUnreadableKeys checks that the key watch shows a key
// it could not decode whole, and keeps what is left of it for no pass.
func TestWatchedKeysShowUnreadableKeys(t *testing.T) {
	readable, unreadable := decodeListing(t)
	w := newWatchedKeys(nil, "", nil)
	w.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer w.queue.ShutDown()
	if err := w.Replace([]any{readable, unreadable}, "9"); err != nil {
		t.Fatal(err)
	}
	name := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "team-payments", Name: n} }
	if !w.has(name("unreadable"), "uid-u") {
		t.Error("the unreadable key is not shown")
	}
	if w.takeShown(name("unreadable")) != nil {
		t.Error("what is left of the unreadable key was kept for its pass")
	}
	if w.takeShown(name("readable")) == nil {
		t.Error("the readable key was not kept for its pass")
	}
}
