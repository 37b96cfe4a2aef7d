package controller

import (
	"slices"
	"testing"
	"unsafe"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

func recordOf(keyUID, name string) *apikeysv1alpha1.ApiKeyRecord {
	return &apikeysv1alpha1.ApiKeyRecord{ObjectMeta: metav1.ObjectMeta{Name: string([]byte(name))},
		Spec: apikeysv1alpha1.ApiKeyRecordSpec{ApiKey: apikeysv1alpha1.ApiKeyReference{
			Namespace: "team-payments", Name: "billing", UID: string([]byte(keyUID))}}}
}

// TestKeyRecords checks the index of records by key UID, and that it keeps
// the strings of the objects the cache holds now, not of those it dropped.
func TestKeyRecords(t *testing.T) {
	k := newKeyRecords()
	k.set(recordOf("uid-a", "sha256-1"))
	k.set(recordOf("uid-a", "sha256-2"))
	k.set(recordOf("uid-b", "sha256-3"))
	if got := k.names("uid-a"); !slices.Equal(got, []string{"sha256-1", "sha256-2"}) {
		t.Errorf("names(uid-a) = %q", got)
	}

	updated := recordOf("uid-a", "sha256-1")
	k.set(updated)
	if got := k.names("uid-a"); !slices.Equal(got, []string{"sha256-1", "sha256-2"}) {
		t.Errorf("after an update, names(uid-a) = %q", got)
	}
	for uid, names := range k.byKey {
		if uid == "uid-a" && (unsafe.StringData(uid) != unsafe.StringData(updated.Spec.ApiKey.UID) ||
			unsafe.StringData(names[0]) != unsafe.StringData(updated.Name)) {
			t.Error("the index kept the strings of the record the update replaced")
		}
	}

	k.remove(recordOf("uid-a", "sha256-1"))
	k.remove(recordOf("uid-b", "sha256-3"))
	if got := k.names("uid-a"); !slices.Equal(got, []string{"sha256-2"}) {
		t.Errorf("after a delete, names(uid-a) = %q", got)
	}
	if _, ok := k.byKey["uid-b"]; ok || k.names("uid-b") != nil {
		t.Error("a key without records stayed in the index")
	}
}
