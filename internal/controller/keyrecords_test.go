package controller

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

func recordOf(key, keyUID, name, rv string) *apikeysv1alpha1.ApiKeyRecord {
	return &apikeysv1alpha1.ApiKeyRecord{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: rv},
		Spec: apikeysv1alpha1.ApiKeyRecordSpec{ApiKey: apikeysv1alpha1.ApiKeyReference{
			Namespace: "team-payments", Name: key, UID: keyUID}}}
}

// TestKeyRecordsEvents checks the records kept by key UID, whom each event
// wakes, and what the record collector is told, including what changed
// while the watch was broken off.
func TestKeyRecordsEvents(t *testing.T) {
	known := []keyUID{{NamespacedName: types.NamespacedName{Namespace: "team-payments", Name: "a"}, uid: digestOf("uid-a")}}
	k := newKeyRecords(nil, func() []keyUID { return known })
	k.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer k.queue.ShutDown()
	var told []string
	k.changed = func(rec *apikeysv1alpha1.ApiKeyRecord) { told = append(told, rec.Name) }
	step := eventSteps(t, k.queue, &told)
	names := func(uid string) []string {
		refs := k.of(digestOf(uid))
		out := make([]string, 0, len(refs))
		for _, ref := range refs {
			out = append(out, ref.name())
		}
		slices.Sort(out)
		return out
	}

	step("first listing", func() error {
		return k.Replace([]any{recordOf("a", "uid-a", "sha256-1", "10")}, "10")
	}, nil, nil)
	if err := k.WaitForSync(t.Context()); err != nil || !k.hasListed() {
		t.Fatalf("not synced after the first listing: %v", err)
	}
	step("created", func() error { return k.Add(recordOf("a", "uid-a", "sha256-2", "11")) }, []string{"a"}, []string{"sha256-2"})
	step("updated", func() error { return k.Update(recordOf("a", "uid-a", "sha256-1", "12")) }, []string{"a"}, []string{"sha256-1"})
	if got := k.of(digestOf("uid-a")); !slices.Contains(got, refNamed("sha256-1", 12)) {
		t.Errorf("kept %+v, want sha256-1 at resourceVersion 12", got)
	}
	if opts := atLeast(refNamed("sha256-1", 12).resourceVersion); opts.Raw == nil || opts.Raw.ResourceVersion != "12" {
		t.Errorf("a pass would read %+v, want resourceVersion 12 or later", opts.Raw)
	}
	step("deleted", func() error { return k.Delete(recordOf("a", "uid-a", "sha256-2", "13")) }, []string{"a"}, nil)
	if got := names("uid-a"); !slices.Equal(got, []string{"sha256-1"}) {
		t.Errorf("records of a = %v after a delete", got)
	}
	k.drop(digestOf("uid-a"), refNamed("sha256-1", 5))
	if got := names("uid-a"); !slices.Equal(got, []string{"sha256-1"}) {
		t.Errorf("a pass that read sha256-1 at 5 dropped it at 12: records of a = %v", got)
	}
	k.drop(digestOf("uid-a"), refNamed("sha256-1", 12))
	if got := k.of(digestOf("uid-a")); got != nil {
		t.Errorf("records of a = %v after the pass dropped its last", got)
	}

	// The watch broke off: meanwhile sha256-1 came back changed (as far as
	// the map knows, after the drop) and b got a record; then sha256-1 went.
	step("relisting", func() error {
		return k.Replace([]any{recordOf("a", "uid-a", "sha256-1", "20"), recordOf("b", "uid-b", "sha256-3", "21")}, "21")
	}, []string{"a", "b"}, []string{"sha256-1", "sha256-3"})
	step("relisting with no change", func() error {
		return k.Replace([]any{recordOf("a", "uid-a", "sha256-1", "20"), recordOf("b", "uid-b", "sha256-3", "21")}, "21")
	}, nil, nil)
	step("relisting after a's record went", func() error {
		return k.Replace([]any{recordOf("b", "uid-b", "sha256-3", "21")}, "22")
	}, []string{"a"}, nil)
	if got := names("uid-b"); !slices.Equal(got, []string{"sha256-3"}) || k.of(digestOf("uid-a")) != nil {
		t.Errorf("records of b = %v, of a = %v", got, k.of(digestOf("uid-a")))
	}
}

// TestKeyRecordsTellTheCollectorOfOwnWrites: the controller's own create
// of a record wakes no pass, but the collector still hears of it, so a
// record minted for a key deleted meanwhile (the key watch showed the
// deletion before the record existed) is collected, not kept until a
// restart.
func TestKeyRecordsTellTheCollectorOfOwnWrites(t *testing.T) {
	k := newKeyRecords(nil, func() []keyUID { return nil })
	k.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer k.queue.ShutDown()
	k.own = newOwnWrites(func(types.NamespacedName) {})
	var told []string
	k.changed = func(rec *apikeysv1alpha1.ApiKeyRecord) { told = append(told, rec.Name) }
	step := eventSteps(t, k.queue, &told)
	step("first listing", func() error { return k.Replace(nil, "10") }, nil, nil)

	rec := recordOf("gone", "uid-gone", "sha256-9", "")
	k.own.begin(types.NamespacedName{Namespace: "team-payments", Name: "gone"}, rec)
	rec.ResourceVersion = "11"
	k.own.end(rec, nil)
	step("the controller's own create", func() error { return k.Add(recordOf("gone", "uid-gone", "sha256-9", "11")) },
		nil, []string{"sha256-9"})
}

// TestRecordRef checks that a record named after its token's hash is kept
// as the hash's bytes, and any other name as it is, and that both give the
// name back.
func TestRecordRef(t *testing.T) {
	canonical := apikeysv1alpha1.RecordNamePrefix + strings.Repeat("0f", 32)
	for _, tc := range []struct {
		name    string
		asBytes bool
	}{
		{canonical, true},
		{strings.ToUpper(canonical), false},              // not the hex the controller writes
		{apikeysv1alpha1.RecordNamePrefix + "0f", false}, // too short
		{canonical + "00", false},                        // too long
		{"by-hand", false},
	} {
		ref := refNamed(tc.name, 7)
		if got := ref.name(); got != tc.name {
			t.Errorf("refNamed(%q).name() = %q", tc.name, got)
		}
		if asBytes := ref.other == ""; asBytes != tc.asBytes {
			t.Errorf("refNamed(%q) kept as bytes: %v, want %v", tc.name, asBytes, tc.asBytes)
		}
	}
}
