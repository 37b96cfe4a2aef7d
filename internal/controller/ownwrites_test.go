package controller

import (
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// TestOwnWrites checks which watch events count as the controller's own
// write, whichever comes first, the event or the write's response: only
// the event at the resourceVersion the write returned, once. Any other
// event wakes the key, at once or, if it came while the write was in
// flight, when the write ends.
func TestOwnWrites(t *testing.T) {
	var woken []string
	o := newOwnWrites(func(k types.NamespacedName) { woken = append(woken, k.Name) })
	pass := types.NamespacedName{Namespace: "team-payments", Name: "billing"}
	key := func(rv string) *apikeysv1alpha1.ApiKey {
		return &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team-payments", Name: "billing", ResourceVersion: rv}}
	}
	event := func(rv string) bool { return o.caused("ApiKey", "team-payments", "billing", rv) }
	write := func(rv string, err error, during ...string) (held []bool) {
		o.begin(pass, key(""))
		for _, e := range during {
			held = append(held, event(e))
		}
		o.end(key(rv), err)
		return held
	}

	// The response first, then the event.
	write("12", nil)
	if event("11") {
		t.Error("an event older than the write was taken as the write's")
	}
	if !event("12") || event("12") {
		t.Error("the write's event was not taken as its, once")
	}

	// The event first, while the write is in flight.
	if held := write("14", nil, "14"); !slices.Equal(held, []bool{true}) || woken != nil {
		t.Errorf("the write's own event, in flight: held %v, woke %v", held, woken)
	}
	if event("14") {
		t.Error("the write's event counted twice")
	}

	// Another writer's event in flight wakes the key when the write ends.
	write("16", nil, "15")
	write("18", nil, "17", "18")
	write("", errors.New("conflict"), "19")
	if !slices.Equal(woken, []string{"billing", "billing", "billing"}) {
		t.Errorf("woke %v for three writes with others' events in flight, want billing three times", woken)
	}

	// Other objects are not the write's; a relisting forgets the writes.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-payments", Name: "billing-token"}}
	o.begin(pass, secret)
	secret.ResourceVersion = "20"
	o.end(secret, nil)
	if o.caused("Secret", "team-payments", "billing", "20") || o.caused("ApiKey", "team-payments", "billing-token", "20") {
		t.Error("another object's event was taken as the write's")
	}
	o.forget()
	if o.caused("Secret", "team-payments", "billing-token", "20") || len(o.writes) != 0 {
		t.Error("a write noted before a relisting was still taken as caused")
	}
	var none *ownWrites
	none.begin(pass, key(""))
	none.end(key("12"), nil)
	if none.caused("ApiKey", "team-payments", "billing", "12") {
		t.Error("without notes, an event was taken as caused")
	}
}
