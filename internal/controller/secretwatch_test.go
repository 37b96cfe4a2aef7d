package controller

import (
	"context"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// deliveredSecret is the metadata of a Secret named name in team-payments
// with owners.
func deliveredSecret(name string, owners ...metav1.OwnerReference) *metav1.PartialObjectMetadata {
	m := secretMeta()
	m.ObjectMeta = metav1.ObjectMeta{Namespace: "team-payments", Name: name, OwnerReferences: owners,
		Labels: map[string]string{apikeysv1alpha1.ManagedByLabel: apikeysv1alpha1.ManagedByValue}}
	return m
}

func keyRef(name string, uid types.UID) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apikeysv1alpha1.GroupVersion.String(), Kind: "ApiKey", Name: name, UID: uid,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
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
			s := newDeliveredSecrets(nil, nil)
			s.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer s.queue.ShutDown()
			if err := s.Add(deliveredSecret("billing-token", tc.owners...)); err != nil {
				t.Fatal(err)
			}
			if got := s.controlledBy("team-payments", "billing-token", "key-uid"); got != tc.want {
				t.Errorf("controlledBy = %v, want %v", got, tc.want)
			}
			if s.controlledBy("team-payments", "other-token", "key-uid") || s.controlledBy("team-other", "billing-token", "key-uid") {
				t.Error("another Secret counted as delivered")
			}
		})
	}
}

// TestDeliveredSecretsEvents checks that each change wakes the key that
// controls the Secret, and that a relisting wakes the keys whose Secrets
// changed or vanished while the watch was broken off, and no other.
func TestDeliveredSecretsEvents(t *testing.T) {
	keys := []keyUID{
		{types.NamespacedName{Namespace: "team-payments", Name: "a"}, "uid-a"},
		{types.NamespacedName{Namespace: "team-payments", Name: "b"}, "uid-b"},
		{types.NamespacedName{Namespace: "team-payments", Name: "c"}, "uid-c"},
	}
	s := newDeliveredSecrets(nil, func(context.Context) ([]keyUID, error) { return keys, nil })
	s.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer s.queue.ShutDown()

	first := []any{deliveredSecret("a-token", keyRef("a", "uid-a")), deliveredSecret("b-token", keyRef("b", "uid-b")),
		deliveredSecret("c-token", keyRef("c", "uid-c"))}
	if err := s.Replace(first, "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitForSync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := woken(s.queue); got != nil {
		t.Errorf("the first listing woke %v; every key is reconciled at start anyway", got)
	}

	if err := s.Delete(deliveredSecret("a-token", keyRef("a", "uid-a"))); err != nil {
		t.Fatal(err)
	}
	if got := woken(s.queue); !slices.Equal(got, []string{"a"}) || s.controlledBy("team-payments", "a-token", "uid-a") {
		t.Errorf("deleting a's Secret woke %v, and left it delivered: %v", got, s.controlledBy("team-payments", "a-token", "uid-a"))
	}
	if err := s.Update(deliveredSecret("a-token", keyRef("a", "uid-a"))); err != nil {
		t.Fatal(err)
	}
	if got := woken(s.queue); !slices.Equal(got, []string{"a"}) || !s.controlledBy("team-payments", "a-token", "uid-a") {
		t.Errorf("restoring a's Secret woke %v", got)
	}

	// While the watch was broken off: b's Secret was deleted, c's was
	// taken over by another key d, a's is unchanged.
	relisted := []any{deliveredSecret("a-token", keyRef("a", "uid-a")), deliveredSecret("c-token", keyRef("d", "uid-d"))}
	if err := s.Replace(relisted, "2"); err != nil {
		t.Fatal(err)
	}
	if got := woken(s.queue); !slices.Equal(got, []string{"b", "c", "d"}) {
		t.Errorf("the relisting woke %v, want the keys whose Secrets changed: b, c and d", got)
	}
	if s.controlledBy("team-payments", "b-token", "uid-b") || s.controlledBy("team-payments", "c-token", "uid-c") ||
		!s.controlledBy("team-payments", "c-token", "uid-d") {
		t.Error("the relisting did not replace what the watch showed")
	}
}
