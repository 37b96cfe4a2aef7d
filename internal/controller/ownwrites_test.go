package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// TestOwnWrites checks that only the event of the controller's own write,
// at the very resourceVersion it produced, is taken as caused by it, once;
// that an older event is not, and a newer one ends the wait for it.
func TestOwnWrites(t *testing.T) {
	o := newOwnWrites()
	key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team-payments", Name: "billing", ResourceVersion: "12"}}
	o.note(key)
	if o.caused("ApiKey", "team-payments", "billing", "11") {
		t.Error("an event older than the write was taken as the write's")
	}
	if o.caused("Secret", "team-payments", "billing", "12") || o.caused("ApiKey", "other", "billing", "12") {
		t.Error("another object's event was taken as the write's")
	}
	if !o.caused("ApiKey", "team-payments", "billing", "12") {
		t.Error("the write's own event was not taken as its")
	}
	if o.caused("ApiKey", "team-payments", "billing", "12") {
		t.Error("the write's event was taken as its twice")
	}

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-payments", Name: "billing-token", ResourceVersion: "20"}}
	o.note(secret)
	if o.caused("Secret", "team-payments", "billing-token", "21") || len(o.rv) != 0 {
		t.Error("an event newer than the write was taken as its, or left the write waiting")
	}

	m := secretMeta()
	m.Namespace, m.Name, m.ResourceVersion = "team-payments", "billing-token", "30"
	o.note(m)
	o.forget()
	if o.caused("Secret", "team-payments", "billing-token", "30") {
		t.Error("a write noted before a relisting was still taken as caused")
	}
	var none *ownWrites
	none.note(key)
	if none.caused("ApiKey", "team-payments", "billing", "12") {
		t.Error("without notes, an event was taken as caused")
	}
}
