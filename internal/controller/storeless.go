package controller

import (
	"context"
	"fmt"
	"maps"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// storeless is what the controller's watches of ApiKeys, records and
// delivered Secrets share: a reflector whose store keeps nothing but what
// the watch's own methods keep of each event, and the first listing the
// controller waits for. A watch embeds it and gives it those methods.
type storeless struct {
	// what names the objects watched, in errors and in the reflector's
	// name.
	what string
	// change takes an object added, changed or deleted.
	change func(obj any, deleted bool) error
	// replace takes a listing: the first (at start) or a later one (after
	// the watch broke off).
	replace func(list []any, first bool) error

	listed chan struct{} // closed by the first listing

	// own are the controller's own writes: the events they cause wake no
	// pass. Nil: every event wakes one.
	own *ownWrites
	// trim, if set, drops more of each object as it arrives than its
	// managed fields: what the watch never reads.
	trim toolscache.TransformFunc
}

func newStoreless(what string, change func(any, bool) error, replace func([]any, bool) error) storeless {
	return storeless{what: what, change: change, replace: replace, listed: make(chan struct{})}
}

// run starts a reflector of lw's objects, like expected, into s until ctx
// ends.
func (s *storeless) run(ctx context.Context, lw *toolscache.ListWatch, expected runtime.Object) {
	r := toolscache.NewReflectorWithOptions(lw, expected, s, toolscache.ReflectorOptions{Name: "apikey: " + s.what})
	go r.RunWithContext(ctx)
}

// WaitForSync returns once the first listing is in.
func (s *storeless) WaitForSync(ctx context.Context) error {
	select {
	case <-s.listed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s not listed: %w", s.what, ctx.Err())
	}
}

// hasListed reports whether the first listing is in.
func (s *storeless) hasListed() bool {
	select {
	case <-s.listed:
		return true
	default:
		return false
	}
}

func (s *storeless) String() string { return s.what + " (watch)" }

// Transformer has the reflector drop managed fields, and what trim drops,
// from each object of a first listing streamed as a watch (the only place
// client-go applies a store's transform), which holds every object of its
// kind at once. What a watch keeps from events it trims itself.
func (s *storeless) Transformer() toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	if s.trim == nil {
		return strip
	}
	return func(obj any) (any, error) {
		obj, err := strip(obj)
		if err != nil {
			return obj, err
		}
		return s.trim(obj)
	}
}

// The reflector's store.

func (s *storeless) Add(obj any) error    { return s.change(obj, false) }
func (s *storeless) Update(obj any) error { return s.change(obj, false) }
func (s *storeless) Delete(obj any) error { return s.change(obj, true) }
func (s *storeless) Resync() error        { return nil }

func (s *storeless) Replace(list []any, _ string) error {
	first := !s.hasListed()
	if !first {
		s.own.forget() // the events of writes noted may be among those missed
	}
	if err := s.replace(list, first); err != nil {
		return err
	}
	if first {
		close(s.listed)
	}
	return nil
}

// listWatch lists and watches, through c, objects of list's kind matching
// base (namespace, field selector).
func listWatch(c client.WithWatch, list client.ObjectList, base client.ListOptions) *toolscache.ListWatch {
	opts := func(raw metav1.ListOptions) *client.ListOptions {
		o := base
		o.Raw, o.Limit, o.Continue = &raw, raw.Limit, raw.Continue
		return &o
	}
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, raw metav1.ListOptions) (runtime.Object, error) {
			out := list.DeepCopyObject().(client.ObjectList)
			return out, c.List(ctx, out, opts(raw))
		},
		WatchFuncWithContext: func(ctx context.Context, raw metav1.ListOptions) (watch.Interface, error) {
			return c.Watch(ctx, list.DeepCopyObject().(client.ObjectList), opts(raw))
		},
	}
}

// versionOf reads a resourceVersion as the number kube-apiserver's are, 0
// if it is not one.
func versionOf(resourceVersion string) uint64 {
	v, _ := strconv.ParseUint(resourceVersion, 10, 64)
	return v
}

// atLeast reads an object at resourceVersion v or later (from
// kube-apiserver's watch cache), or the newest if v is 0.
func atLeast(v uint64) *client.GetOptions {
	if v == 0 {
		return &client.GetOptions{}
	}
	return &client.GetOptions{Raw: &metav1.GetOptions{ResourceVersion: strconv.FormatUint(v, 10)}}
}

// stash holds objects a watch showed (a first listing's, or an event's)
// until each is taken. Go maps keep the size of their peak, so it moves
// into a smaller map whenever it falls to a quarter of the size it had,
// and lets its map go once empty:
// otherwise the emptied map of 100k objects would stay for good. Callers
// hold the watch's lock.
type stash[K comparable, V any] struct {
	m    map[K]V
	size int // len(m) when m was made
}

func (s *stash[K, V]) fill(m map[K]V) { s.m, s.size = m, len(m) }

// put keeps v under k, in place of what was.
func (s *stash[K, V]) put(k K, v V) {
	if s.m == nil {
		s.m = map[K]V{}
	}
	s.m[k] = v
	s.size = max(s.size, len(s.m))
}

// take returns and forgets the object under k, if any.
func (s *stash[K, V]) take(k K) V {
	v := s.m[k]
	s.drop(k)
	return v
}

// drop forgets the object under k.
func (s *stash[K, V]) drop(k K) {
	if _, ok := s.m[k]; ok {
		delete(s.m, k)
		s.shrink()
	}
}

// dropWhere forgets every object gone reports.
func (s *stash[K, V]) dropWhere(gone func(K, V) bool) {
	maps.DeleteFunc(s.m, gone)
	s.shrink()
}

func (s *stash[K, V]) shrink() {
	switch n := len(s.m); {
	case n == 0:
		s.m, s.size = nil, 0
	case n <= s.size/4:
		smaller := make(map[K]V, n)
		maps.Copy(smaller, s.m)
		s.fill(smaller)
	}
}
