package controller

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// ownWrites are the resourceVersions the controller's own writes produced
// and its watches have not shown yet. The event such a write causes wakes
// no pass: the pass that wrote already acted on everything it saw, and
// each pass reads its key and records from kube-apiserver, so a pass per
// own write would cost reads (a bulk issuance's trailing passes queued
// minutes of them at the client's QPS, ahead of the next user's key). Any
// other writer's change, a deletion, and a write seen at another
// resourceVersion wake the key as before.
type ownWrites struct {
	mu sync.Mutex
	rv map[digest]uint64 // digestOf(kind, namespace, name) → resourceVersion
}

func newOwnWrites() *ownWrites { return &ownWrites{rv: map[digest]uint64{}} }

// note records the write that left obj at its resourceVersion.
func (o *ownWrites) note(obj client.Object) {
	kind := kindOf(obj)
	v := versionOf(obj.GetResourceVersion())
	if o == nil || kind == "" || v == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rv[digestOf(kind, obj.GetNamespace(), obj.GetName())] = v
}

// caused reports whether the controller's own write made the object at
// resourceVersion rv (and forgets the write once its event, or a later
// one, came).
func (o *ownWrites) caused(kind, namespace, name, rv string) bool {
	if o == nil {
		return false
	}
	at := digestOf(kind, namespace, name)
	v := versionOf(rv)
	o.mu.Lock()
	defer o.mu.Unlock()
	wrote, ok := o.rv[at]
	if !ok || v < wrote {
		return false
	}
	delete(o.rv, at)
	return v == wrote
}

// forget drops every write noted: after a relisting, whose events may
// have skipped them.
func (o *ownWrites) forget() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.rv)
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *apikeysv1alpha1.ApiKey:
		return "ApiKey"
	case *apikeysv1alpha1.ApiKeyRecord:
		return "ApiKeyRecord"
	case *corev1.Secret:
		return "Secret"
	}
	return obj.GetObjectKind().GroupVersionKind().Kind // metadata-only objects
}

// notingWrites is a client whose successful writes are noted in own.
type notingWrites struct {
	client.Client
	own *ownWrites
}

func (c notingWrites) noted(obj client.Object, err error) error {
	if err == nil {
		c.own.note(obj)
	}
	return err
}

func (c notingWrites) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	return c.noted(obj, c.Client.Create(ctx, obj, opts...))
}

func (c notingWrites) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	return c.noted(obj, c.Client.Update(ctx, obj, opts...))
}

func (c notingWrites) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	return c.noted(obj, c.Client.Patch(ctx, obj, patch, opts...))
}

func (c notingWrites) Status() client.SubResourceWriter {
	return notingStatus{SubResourceWriter: c.Client.Status(), own: c.own}
}

type notingStatus struct {
	client.SubResourceWriter
	own *ownWrites
}

func (s notingStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	return notingWrites{own: s.own}.noted(obj, s.SubResourceWriter.Update(ctx, obj, opts...))
}

func (s notingStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	return notingWrites{own: s.own}.noted(obj, s.SubResourceWriter.Patch(ctx, obj, patch, opts...))
}
