package controller

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// ownWrites are the controller's writes whose watch events have not come
// yet. The event such a write causes wakes no pass: the pass that wrote
// already acted on everything it saw, and each pass reads its key and
// records from kube-apiserver, so a pass per own write would cost reads (a
// bulk issuance's trailing passes queued minutes of them at the client's
// QPS, ahead of the next user's key). Any other writer's change, another
// writer's deletion, and an event at another resourceVersion wake the key
// as before.
//
// A record the pass deleted wakes no pass either: otherwise a pass that
// mints a token, fails to deliver it and deletes its record would wake the
// next to do the same, again and again, past the rate limiter. Records are
// named by their token's hash and never come back, so the name alone tells
// the deletion's event.
//
// A write's event can come before its response: while a write is in
// flight, its object's events are held, and once the response tells the
// write's resourceVersion, any held event that was not the write's wakes
// the key that wrote.
type ownWrites struct {
	mu     sync.Mutex
	writes map[digest]*ownWrite // by digestOf(kind, namespace, name)
	// deletes are the records deleted, or being deleted, whose events have
	// not come yet, by digestOf(kind, namespace, name).
	deletes map[digest]struct{}
	// wake wakes a key (the ApiKey controller's queue).
	wake func(types.NamespacedName)
}

type ownWrite struct {
	key      types.NamespacedName // the key whose pass wrote
	inFlight bool
	wrote    uint64 // the resourceVersion the write returned
	held     uint64 // the resourceVersion of an event that came in flight
	other    bool   // events other than the write's came in flight
}

func newOwnWrites(wake func(types.NamespacedName)) *ownWrites {
	return &ownWrites{writes: map[digest]*ownWrite{}, deletes: map[digest]struct{}{}, wake: wake}
}

// beginDelete notes that the pass of key is about to delete the record
// obj: its event may come before the response.
func (o *ownWrites) beginDelete(key types.NamespacedName, obj client.Object) {
	if o == nil || key.Name == "" || kindOf(obj) != recordKind {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deletes[digestOf(recordKind, obj.GetNamespace(), obj.GetName())] = struct{}{}
}

// endDelete forgets a deletion that failed (or found the record gone): no
// event of its own will come.
func (o *ownWrites) endDelete(obj client.Object, err error) {
	if o == nil || err == nil || kindOf(obj) != recordKind {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.deletes, digestOf(recordKind, obj.GetNamespace(), obj.GetName()))
}

// ownDeleteSeen reports whether the controller deleted the record named name,
// whose deletion's event has come.
func (o *ownWrites) ownDeleteSeen(name string) bool {
	if o == nil {
		return false
	}
	at := digestOf(recordKind, "", name)
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.deletes[at]
	delete(o.deletes, at)
	return ok
}

// begin notes that the pass of key is about to write obj.
func (o *ownWrites) begin(key types.NamespacedName, obj client.Object) {
	kind := kindOf(obj)
	if o == nil || kind == "" || key.Name == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.writes[digestOf(kind, obj.GetNamespace(), obj.GetName())] = &ownWrite{key: key, inFlight: true}
}

// end notes how the write of obj begun with begin ended.
func (o *ownWrites) end(obj client.Object, err error) {
	kind := kindOf(obj)
	if o == nil || kind == "" {
		return
	}
	at := digestOf(kind, obj.GetNamespace(), obj.GetName())
	o.mu.Lock()
	w, ok := o.writes[at]
	if !ok || !w.inFlight {
		o.mu.Unlock()
		return
	}
	w.inFlight, w.wrote = false, versionOf(obj.GetResourceVersion())
	wake := w.other || (w.held != 0 && (err != nil || w.held != w.wrote))
	if err != nil || w.wrote == 0 || w.held != 0 {
		delete(o.writes, at) // its event came, or none will
	}
	o.mu.Unlock()
	if wake {
		o.wake(w.key)
	}
}

// caused reports whether the controller's own write made the object at
// resourceVersion rv, or holds the event while a write of the object is
// in flight (end decides then).
func (o *ownWrites) caused(kind, namespace, name, rv string) bool {
	if o == nil {
		return false
	}
	at := digestOf(kind, namespace, name)
	v := versionOf(rv)
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.writes[at]
	switch {
	case !ok:
		return false
	case w.inFlight:
		if w.held != 0 {
			w.other = true
		}
		w.held = v
		return true
	case v < w.wrote:
		return false
	}
	delete(o.writes, at)
	return v == w.wrote
}

// forget drops every write noted: after a relisting, whose events may
// have skipped them. Writes in flight wake their keys when they end.
func (o *ownWrites) forget() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.deletes)
	for at, w := range o.writes {
		if w.inFlight {
			w.other = true
		} else {
			delete(o.writes, at)
		}
	}
}

// recordKind is the kind of ApiKeyRecords, as kindOf names it.
const recordKind = "ApiKeyRecord"

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *apikeysv1alpha1.ApiKey:
		return "ApiKey"
	case *apikeysv1alpha1.ApiKeyRecord:
		return recordKind
	case *corev1.Secret:
		return "Secret"
	}
	return obj.GetObjectKind().GroupVersionKind().Kind // metadata-only objects
}

// passKey is the context key of the ApiKey whose pass runs.
type passKey struct{}

func withPass(ctx context.Context, key types.NamespacedName) context.Context {
	return context.WithValue(ctx, passKey{}, key)
}

func passOf(ctx context.Context) types.NamespacedName {
	key, _ := ctx.Value(passKey{}).(types.NamespacedName)
	return key
}

// notingWrites is a client whose writes in a pass are noted in own. Before
// it writes an ApiKey, the key watch forgets any object it kept of that key
// for a pass (keys.unread): a later pass must not take an object older than
// this write.
type notingWrites struct {
	client.Client
	own  *ownWrites
	keys *watchedKeys
}

func (c notingWrites) write(ctx context.Context, obj client.Object, do func() error) error {
	// Noted first, then forgotten: an event from before the note is
	// dropped here, and one after it is held until the write ends.
	c.own.begin(passOf(ctx), obj)
	if key, ok := obj.(*apikeysv1alpha1.ApiKey); ok {
		c.keys.dropShown(types.NamespacedName{Namespace: key.Namespace, Name: key.Name})
	}
	err := do()
	c.own.end(obj, err)
	return err
}

func (c notingWrites) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	return c.write(ctx, obj, func() error { return c.Client.Create(ctx, obj, opts...) })
}

func (c notingWrites) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	return c.write(ctx, obj, func() error { return c.Client.Update(ctx, obj, opts...) })
}

func (c notingWrites) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	return c.write(ctx, obj, func() error { return c.Client.Patch(ctx, obj, patch, opts...) })
}

func (c notingWrites) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	c.own.beginDelete(passOf(ctx), obj)
	err := c.Client.Delete(ctx, obj, opts...)
	c.own.endDelete(obj, err)
	return err
}

func (c notingWrites) Status() client.SubResourceWriter {
	return notingStatus{SubResourceWriter: c.Client.Status(), writes: c}
}

type notingStatus struct {
	client.SubResourceWriter
	writes notingWrites
}

func (s notingStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	return s.writes.write(ctx, obj, func() error { return s.SubResourceWriter.Update(ctx, obj, opts...) })
}

func (s notingStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	return s.writes.write(ctx, obj, func() error { return s.SubResourceWriter.Patch(ctx, obj, patch, opts...) })
}
