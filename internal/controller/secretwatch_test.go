package controller

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// deliveredSecret is the metadata of a Secret named name in team-payments
// with owners, and UID "uid-of-<name>".
func deliveredSecret(name string, owners ...metav1.OwnerReference) *metav1.PartialObjectMetadata {
	m := secretMeta()
	m.ObjectMeta = metav1.ObjectMeta{Namespace: "team-payments", Name: name, UID: types.UID("uid-of-" + name), OwnerReferences: owners,
		Labels: map[string]string{apikeysv1alpha1.ManagedByLabel: apikeysv1alpha1.ManagedByValue}}
	return m
}

func keyRef(name string, uid types.UID) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apikeysv1alpha1.GroupVersion.String(), Kind: "ApiKey", Name: name, UID: uid,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
}

// queuedSecrets is a watch of delivered Secrets that is not started, with
// a queue to wake keys on (the caller shuts it down) and keys as the ApiKeys
// the controller knows.
func queuedSecrets(keys []keyUID) *deliveredSecrets {
	s := newDeliveredSecrets(nil, func() []keyUID { return keys })
	s.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	return s
}

// woken drains q: the keys it was asked to reconcile, sorted by name.
func woken(q workqueue.TypedRateLimitingInterface[reconcile.Request]) []string {
	var out []string
	for q.Len() > 0 {
		req, _ := q.Get()
		q.Done(req)
		out = append(out, req.Name)
	}
	slices.Sort(out)
	return out
}

// TestDeliveredSecretsOwners checks which Secrets count as delivered: those
// an ApiKey controls, as the watch last showed them.
func TestDeliveredSecretsOwners(t *testing.T) {
	for _, tc := range []struct {
		name   string
		owners []metav1.OwnerReference
		want   bool
	}{
		{"controlled by its key", []metav1.OwnerReference{keyRef("billing", "key-uid")}, true},
		{"another owner beside the key", []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "c", UID: "c"},
			keyRef("billing", "key-uid")}, true},
		{"controlled by another key", []metav1.OwnerReference{keyRef("billing", "other-uid")}, false},
		{"the key, not as controller", []metav1.OwnerReference{{APIVersion: apikeysv1alpha1.GroupVersion.String(),
			Kind: "ApiKey", Name: "billing", UID: "key-uid"}}, false},
		{"controlled by something else", []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "d",
			UID: "key-uid", Controller: ptr.To(true)}}, false},
		{"no owner", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := queuedSecrets(nil)
			defer s.queue.ShutDown()
			if err := s.Add(deliveredSecret("billing-token", tc.owners...)); err != nil {
				t.Fatal(err)
			}
			if got := s.controlledBy("team-payments", "billing-token", "key-uid", ""); got != tc.want {
				t.Errorf("controlledBy = %v, want %v", got, tc.want)
			}
			if got := s.controlledBy("team-payments", "billing-token", "key-uid", "uid-of-billing-token"); got != tc.want {
				t.Errorf("controlledBy with the Secret's UID = %v, want %v", got, tc.want)
			}
			if s.controlledBy("team-payments", "billing-token", "key-uid", "uid-of-the-delivered-one") {
				t.Error("a Secret with another UID counted as the delivered one")
			}
			if s.controlledBy("team-payments", "other-token", "key-uid", "") || s.controlledBy("team-other", "billing-token", "key-uid", "") {
				t.Error("another Secret counted as delivered")
			}
		})
	}
}

// TestDeliveredSecretsEvents checks that each change wakes the key that
// controlled the Secret and the one that controls it now, and that a
// relisting wakes the keys whose Secrets changed or vanished while the watch
// was broken off, and no other.
func TestDeliveredSecretsEvents(t *testing.T) {
	keys := []keyUID{
		{types.NamespacedName{Namespace: "team-payments", Name: "a"}, digestOf("uid-a")},
		{types.NamespacedName{Namespace: "team-payments", Name: "b"}, digestOf("uid-b")},
		{types.NamespacedName{Namespace: "team-payments", Name: "c"}, digestOf("uid-c")},
	}
	s := queuedSecrets(keys)
	defer s.queue.ShutDown()
	a, b, c := deliveredSecret("a-token", keyRef("a", "uid-a")), deliveredSecret("b-token", keyRef("b", "uid-b")),
		deliveredSecret("c-token", keyRef("c", "uid-c"))

	for _, step := range []struct {
		what   string
		do     func() error
		woken  []string
		shown  map[string]types.UID // Secret → the key it must count as delivered for
		hidden map[string]types.UID // Secret → a key it must not
	}{
		{"the first listing (every key is reconciled at start anyway)", func() error { return s.Replace([]any{a, b, c}, "1") },
			nil, map[string]types.UID{"a-token": "uid-a", "b-token": "uid-b", "c-token": "uid-c"}, nil},
		{"deleting a's Secret", func() error { return s.Delete(a) },
			[]string{"a"}, nil, map[string]types.UID{"a-token": "uid-a"}},
		{"restoring it", func() error { return s.Update(a) },
			[]string{"a"}, map[string]types.UID{"a-token": "uid-a"}, nil},
		{"editing its annotations (which may lift a stalled rotation)", func() error {
			edited := deliveredSecret("a-token", keyRef("a", "uid-a"))
			edited.Annotations = map[string]string{"example.com/touched": "again"}
			return s.Update(edited)
		}, []string{"a"}, map[string]types.UID{"a-token": "uid-a"}, nil},
		{"replacing it by another of its name and owner", func() error {
			replaced := deliveredSecret("a-token", keyRef("a", "uid-a"))
			replaced.UID = "uid-of-a-second-a-token"
			return s.Update(replaced)
		}, []string{"a"}, map[string]types.UID{"a-token": "uid-a"}, nil},
		{"putting the first back", func() error { return s.Update(a) },
			[]string{"a"}, map[string]types.UID{"a-token": "uid-a"}, nil},
		{"taking c's controller reference away (the event names no key)", func() error { return s.Update(deliveredSecret("c-token")) },
			[]string{"c"}, nil, map[string]types.UID{"c-token": "uid-c"}},
		{"giving it back", func() error { return s.Update(c) },
			[]string{"c"}, map[string]types.UID{"c-token": "uid-c"}, nil},
		{"a relisting after b's Secret was deleted and c's taken over by d, unseen",
			func() error { return s.Replace([]any{a, deliveredSecret("c-token", keyRef("d", "uid-d"))}, "2") },
			[]string{"b", "c", "d"}, map[string]types.UID{"a-token": "uid-a", "c-token": "uid-d"},
			map[string]types.UID{"b-token": "uid-b", "c-token": "uid-c"}},
		{"a relisting after a's Secret was replaced by another of its name and owner, unseen",
			func() error {
				replaced := deliveredSecret("a-token", keyRef("a", "uid-a"))
				replaced.UID = "uid-of-a-new-a-token"
				return s.Replace([]any{replaced, deliveredSecret("c-token", keyRef("d", "uid-d"))}, "3")
			},
			[]string{"a"}, map[string]types.UID{"a-token": "uid-a"}, nil},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		if got := woken(s.queue); !slices.Equal(got, step.woken) {
			t.Errorf("%s woke %v, want %v", step.what, got, step.woken)
		}
		for name, uid := range step.shown {
			if !s.controlledBy("team-payments", name, uid, "") {
				t.Errorf("after %s, %s does not count as %s's", step.what, name, uid)
			}
		}
		for name, uid := range step.hidden {
			if s.controlledBy("team-payments", name, uid, "") {
				t.Errorf("after %s, %s still counts as %s's", step.what, name, uid)
			}
		}
	}
	if err := s.WaitForSync(t.Context()); err != nil {
		t.Error(err)
	}
}

// TestDeliveredSecretsTrim checks what the watch's reflector keeps of a
// Secret as it arrives: its owner references and name, not its labels,
// annotations or managed fields, which the first listing would otherwise
// hold for every delivered Secret at once.
func TestDeliveredSecretsTrim(t *testing.T) {
	s := queuedSecrets(nil)
	defer s.queue.ShutDown()
	m := deliveredSecret("billing-token", keyRef("billing", "key-uid"))
	m.Annotations = map[string]string{apikeysv1alpha1.TokenHashAnnotation: "sha256:00"}
	m.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "manager"}}
	got, err := s.Transformer()(m)
	if err != nil {
		t.Fatal(err)
	}
	kept := got.(*metav1.PartialObjectMetadata)
	if kept.Labels != nil || kept.Annotations != nil || kept.ManagedFields != nil {
		t.Errorf("kept labels %v, annotations %v, managed fields %v", kept.Labels, kept.Annotations, kept.ManagedFields)
	}
	if kept.Name != "billing-token" || keyOf(kept) == nil || keyOf(kept).UID != "key-uid" {
		t.Errorf("lost what the watch reads: %+v", kept.ObjectMeta)
	}
}

// TestDeliveredSecretsOwnerEditLoop checks that someone who edits a
// Secret's controller reference in a loop does not have the controller
// look through every key it knows at each edit: the former owner, named
// only by the digest of its UID, is woken at once the first time and then
// at most once an interval, with every former owner gathered meanwhile.
func TestDeliveredSecretsOwnerEditLoop(t *testing.T) {
	keys := []keyUID{
		{types.NamespacedName{Namespace: "team-payments", Name: "a"}, digestOf("uid-a")},
		{types.NamespacedName{Namespace: "team-payments", Name: "b"}, digestOf("uid-b")},
	}
	var looks atomic.Int32
	s := queuedSecrets(nil)
	defer s.queue.ShutDown()
	s.keyUIDs = func() []keyUID { looks.Add(1); return keys }
	const every = 500 * time.Millisecond
	s.formerOwners.every = every

	// Up to 1000 edits, all within the first half of an interval: the
	// first looks at once, the others are gathered.
	start := time.Now()
	edits := 0
	for i := 0; i < 1000 && time.Since(start) < every/2; i++ {
		edits++
		owner := keyRef("a", "uid-a")
		if i%2 == 1 {
			owner = keyRef("b", "uid-b")
		}
		// The Secret taken from its key, then given to the other one.
		for _, m := range []*metav1.PartialObjectMetadata{deliveredSecret("shared-token", owner), deliveredSecret("shared-token")} {
			if err := s.Update(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := looks.Load(); got != 1 {
		t.Errorf("%d edits in %s looked through the keys %d times, want once", 2*edits, time.Since(start), got)
	}
	woken(s.queue) // the keys the edits named
	// The former owners gathered since the last look are woken when the
	// interval is up, in one look.
	before := looks.Load()
	err := wait.PollUntilContextTimeout(t.Context(), every/10, 10*every, true, func(context.Context) (bool, error) {
		return looks.Load() > before, nil
	})
	if err != nil {
		t.Fatalf("no look within %s of the last edit: %v", 10*every, err)
	}
	if got := woken(s.queue); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("the gathered look woke %v, want [a b]", got)
	}
	if got := looks.Load(); got != before+1 {
		t.Errorf("looked %d more times, want 1", got-before)
	}
}

// TestDeliveredSecretsKeepWhatTheyRead checks that a Secret of the first
// listing keeps only what the watch reads: its owner's to fill, finalizers
// and other owner references could otherwise be most of a megabyte each.
func TestDeliveredSecretsKeepWhatTheyRead(t *testing.T) {
	s := newDeliveredSecrets(nil, nil)
	m := deliveredSecret("a-token", metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "c", UID: "c"},
		keyRef("a", "uid-a"))
	m.Finalizers = []string{strings.Repeat("example.com/", 1000)}
	m.Annotations = map[string]string{"example.com/pad": strings.Repeat("x", 1000)}
	obj, err := s.Transformer()(m)
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*metav1.PartialObjectMetadata)
	if len(got.Finalizers)+len(got.Labels)+len(got.Annotations) != 0 {
		t.Errorf("kept finalizers %d, labels %d, annotations %d", len(got.Finalizers), len(got.Labels), len(got.Annotations))
	}
	if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != "uid-a" {
		t.Errorf("kept owner references %v, want the key's alone", got.OwnerReferences)
	}
	if got.UID != "uid-of-a-token" || got.Name != "a-token" || got.Namespace != "team-payments" {
		t.Errorf("lost what the watch reads: %s/%s %s", got.Namespace, got.Name, got.UID)
	}
}
