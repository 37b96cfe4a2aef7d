package controller

import (
	"context"
	"crypto/sha256"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// digest stands for a string tuple: the first 16 bytes of a SHA-256 of its
// unambiguous encoding (listID).
type digest [16]byte

func digestOf(parts ...string) digest {
	sum := sha256.Sum256([]byte(listID(parts)))
	return digest(sum[:16])
}

// deliveredSecrets is what the controller knows of the Secrets it
// delivered, without an informer cache of them: for each Secret with the
// operator's managed-by label, a digest of its namespace and name, one of
// its own UID and one of the UID of the ApiKey that controls it: about 65
// bytes a Secret in the map, against about 650 for its trimmed metadata in
// an informer cache. A metadata-only watch (never the
// data) feeds it, and each change wakes the ApiKey that controls the
// Secret, so a deleted Secret is noticed at once.
//
// It is a controller-runtime source: it starts with the controller (on the
// leader) and the controller waits for its first listing.
type deliveredSecrets struct {
	storeless
	client metadata.Interface

	// keyUIDs lists the ApiKeys the controller knows, to wake those that
	// controlled a Secret when the change does not name them (a relisting
	// after missed events, an edit of the owner references): only the
	// digests of their UIDs remain.
	keyUIDs func() []keyUID

	mu     sync.RWMutex
	owners map[digest]heldSecret // digest(namespace, name) → its UID and its owner's
	queue  workqueue.TypedRateLimitingInterface[reconcile.Request]

	// formerOwners wakes the keys that stopped controlling a Secret.
	formerOwners coalescedWake
}

// heldSecret is a delivered Secret as the watch last showed it: the digests
// of its UID and of the UID of the ApiKey that controls it.
type heldSecret struct{ secret, owner digest }

// keyUID names an ApiKey and gives the digest of its UID.
type keyUID struct {
	types.NamespacedName
	uid digest
}

var _ source.SyncingSource = (*deliveredSecrets)(nil)

func newDeliveredSecrets(c metadata.Interface, keyUIDs func() []keyUID) *deliveredSecrets {
	s := &deliveredSecrets{client: c, keyUIDs: keyUIDs, owners: map[digest]heldSecret{}}
	s.storeless = newStoreless("delivered Secrets", s.change, s.replaceWith)
	s.trim = ownersOnly
	s.formerOwners = coalescedWake{every: time.Second, wake: s.wakeKeysWith}
	return s
}

// ownersOnly drops from a Secret as it arrives all the watch does not read
// (it reads its namespace, name, UID, resourceVersion and controller
// reference): its first listing holds every delivered Secret at once. The
// token's hash, hint and fingerprint annotations are about half of what
// is left of each, and the rest (finalizers, other owner references) is
// the Secret's owner's to fill: about 1.5 MiB of finalizer names each, on
// a few hundred Secrets labelled as delivered, would otherwise hold the
// manager past its memory limit at every start.
func ownersOnly(obj any) (any, error) {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		m.Labels, m.Annotations, m.Finalizers = nil, nil, nil
		if ref := metav1.GetControllerOfNoCopy(m); ref != nil {
			m.OwnerReferences = []metav1.OwnerReference{*ref}
		} else {
			m.OwnerReferences = nil
		}
	}
	return obj, nil
}

// controlledBy reports whether the watch has shown the Secret
// namespace/name controlled by the ApiKey with UID owner and, unless
// secretUID is empty, with that UID: a Secret made in place of the
// delivered one, with the operator's label and the key's owner reference,
// is not the delivered one. Without a watch (a reconciler not set up with
// a manager) it shows nothing.
func (s *deliveredSecrets) controlledBy(namespace, name string, owner, secretUID types.UID) bool {
	if s == nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	held, ok := s.owners[digestOf(namespace, name)]
	return ok && held.owner == digestOf(string(owner)) && (secretUID == "" || held.secret == digestOf(string(secretUID)))
}

// Start runs the watch until ctx ends, waking keys through queue.
func (s *deliveredSecrets) Start(ctx context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	s.queue = queue
	resource := s.client.Resource(corev1.SchemeGroupVersion.WithResource("secrets"))
	selector := apikeysv1alpha1.ManagedByLabel + "=" + apikeysv1alpha1.ManagedByValue
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.LabelSelector = selector
			return resource.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector = selector
			return resource.Watch(ctx, opts)
		},
	}
	s.run(ctx, lw, &metav1.PartialObjectMetadata{})
	return nil
}

// change takes a Secret added, changed or deleted: it updates the digests
// and wakes the Secret's owner.
func (s *deliveredSecrets) change(obj any, deleted bool) error {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return nil
	}
	at := digestOf(m.Namespace, m.Name)
	owner := keyOf(m)
	var uid digest
	if owner != nil {
		uid = digestOf(string(owner.UID))
	}
	held := heldSecret{secret: digestOf(string(m.UID)), owner: uid}
	s.mu.Lock()
	was, had := s.owners[at]
	if owner == nil || deleted {
		delete(s.owners, at)
	} else {
		s.owners[at] = held
	}
	s.mu.Unlock()
	own := s.own.caused("Secret", m.Namespace, m.Name, m.ResourceVersion)
	// Any edit but the controller's own wakes the key, whatever it changed:
	// trimming a Secret that kube-apiserver refused to rotate into (its old
	// and new annotations too big together) lifts that stall.
	if owner != nil && (deleted || !own) {
		s.queue.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: m.Namespace, Name: owner.Name}})
	}
	if had && was.owner != uid {
		// The key that controlled the Secret no longer does (a rare edit of
		// its owner references): only its UID's digest is left.
		s.formerOwners.add(was.owner)
	}
	return nil
}

// replaceWith takes a listing: the first at start, later ones after the
// watch broke off. A later one wakes the keys whose Secrets changed in
// between, the changes the watch may have missed; at start, every key is
// reconciled anyway.
func (s *deliveredSecrets) replaceWith(list []any, first bool) error {
	owners := make(map[digest]heldSecret, len(list))
	var changed []reconcile.Request
	s.mu.RLock()
	for _, obj := range list {
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			continue
		}
		owner := keyOf(m)
		if owner == nil {
			continue
		}
		at := digestOf(m.Namespace, m.Name)
		held := heldSecret{secret: digestOf(string(m.UID)), owner: digestOf(string(owner.UID))}
		owners[at] = held
		if was, ok := s.owners[at]; !first && (!ok || was != held) {
			changed = append(changed, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: m.Namespace, Name: owner.Name}})
		}
	}
	s.mu.RUnlock()
	s.mu.Lock()
	old := s.owners
	s.owners = owners
	s.mu.Unlock()
	if first {
		return nil
	}
	for _, req := range changed {
		s.queue.Add(req)
	}
	s.wakeOwnersOfVanished(old, owners)
	return nil
}

// wakeOwnersOfVanished wakes the keys that controlled a Secret in old and
// do not in now.
func (s *deliveredSecrets) wakeOwnersOfVanished(old, now map[digest]heldSecret) {
	vanished := map[digest]bool{}
	for at, held := range old {
		if now[at].owner != held.owner {
			vanished[held.owner] = true
		}
	}
	s.wakeKeysWith(vanished)
}

func (s *deliveredSecrets) wakeKeysWith(uids map[digest]bool) { wakeKeysWith(s.queue, s.keyUIDs, uids) }

// wakeKeysWith wakes through queue the keys whose UIDs have the digests in
// uids, matching them against the keys the controller knows (keyUIDs):
// for changes that name no key, only the digest of its UID.
func wakeKeysWith(queue workqueue.TypedRateLimitingInterface[reconcile.Request],
	keyUIDs func() []keyUID, uids map[digest]bool) {
	if len(uids) == 0 {
		return
	}
	for _, k := range keyUIDs() {
		if uids[k.uid] {
			queue.Add(reconcile.Request{NamespacedName: k.NamespacedName})
		}
	}
}

// coalescedWake wakes keys known only by the digests of their UIDs (the
// former owner of a Secret) for events that anyone who may edit a Secret's
// owner references can cause at will. Finding those keys means a look at
// every key the controller knows (wake). It looks at once when its last
// look is at least every old; otherwise it gathers the digests and looks
// once when every has passed. An edit loop then costs a look an interval,
// not one an edit.
type coalescedWake struct {
	every time.Duration
	wake  func(uids map[digest]bool)

	mu      sync.Mutex
	last    time.Time       // when it last looked
	pending map[digest]bool // non-nil while a look is due
}

// add has the key whose UID has digest uid woken, now or within every.
func (c *coalescedWake) add(uid digest) {
	c.mu.Lock()
	if c.pending != nil {
		c.pending[uid] = true
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if wait := c.last.Add(c.every).Sub(now); wait > 0 {
		c.pending = map[digest]bool{uid: true}
		time.AfterFunc(wait, c.flush)
		c.mu.Unlock()
		return
	}
	c.last = now
	c.mu.Unlock()
	c.wake(map[digest]bool{uid: true})
}

// flush wakes the keys gathered since the last look.
func (c *coalescedWake) flush() {
	c.mu.Lock()
	uids := c.pending
	c.pending, c.last = nil, time.Now()
	c.mu.Unlock()
	c.wake(uids)
}

// keyOf is the controller reference of a Secret to an ApiKey, or nil.
func keyOf(m *metav1.PartialObjectMetadata) *metav1.OwnerReference {
	ref := metav1.GetControllerOfNoCopy(m)
	if ref == nil || ref.Kind != "ApiKey" || !strings.HasPrefix(ref.APIVersion, apikeysv1alpha1.GroupVersion.Group+"/") {
		return nil
	}
	return ref
}
