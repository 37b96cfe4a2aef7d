package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// fullKey is an ApiKey with everything the cache drops and everything it keeps.
func fullKey() *apikeysv1alpha1.ApiKey {
	expires := metav1.NewTime(time.Date(2031, 3, 14, 0, 0, 0, 0, time.UTC))
	return &apikeysv1alpha1.ApiKey{
		TypeMeta: metav1.TypeMeta{APIVersion: apikeysv1alpha1.GroupVersion.String(), Kind: "ApiKey"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "team-payments", Name: "billing-export", UID: "key-uid", ResourceVersion: "42", Generation: 3,
			CreationTimestamp: metav1.NewTime(expires.Add(-time.Hour)), Finalizers: []string{Finalizer, "example.com/other"},
			Labels:          map[string]string{"team": "payments"},
			Annotations:     map[string]string{lastApplied: `{"spec":{}}`, apikeysv1alpha1.RotateAnnotation: "2"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: "cm-uid"}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
		Spec: apikeysv1alpha1.ApiKeySpec{
			Description: "Exports invoices", Identity: apikeysv1alpha1.IdentityOwner, Prefix: "ak",
			Owner:  &apikeysv1alpha1.Owner{Username: "alice", UID: "alice-uid", Groups: []string{"developers"}},
			Scopes: []string{"invoices:read"}, Audiences: []string{"billing"}, ExpiresAt: &expires,
			Secret: apikeysv1alpha1.SecretTemplate{
				Name: "billing-token", Labels: map[string]string{"app": "billing"}, Annotations: map[string]string{"note": "x"},
			},
		},
		Status: apikeysv1alpha1.ApiKeyStatus{
			Conditions: []metav1.Condition{{Type: apikeysv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: apikeysv1alpha1.ReasonIssued,
				Message: "Token ak_abcd… is live", ObservedGeneration: 3, LastTransitionTime: expires}},
			ObservedGeneration: 3, TokenHint: "ak_abcd…", RecordName: "sha256-00", SecretName: "billing-token",
			Username: "alice", LastRotateRequest: "1",
		},
	}
}

func TestTrimApiKey(t *testing.T) {
	in := fullKey()
	before := in.DeepCopy()
	out, err := trimApiKey(in)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*apikeysv1alpha1.ApiKey)
	if !equality.Semantic.DeepEqual(in, before) {
		t.Error("the transform changed the object it was given")
	}
	if got.Labels != nil || got.OwnerReferences != nil || got.ManagedFields != nil || got.Spec.Description != "" {
		t.Errorf("kept labels %v, owners %v, managed fields or description %q", got.Labels, got.OwnerReferences, got.Spec.Description)
	}
	if want := map[string]string{apikeysv1alpha1.RotateAnnotation: "2"}; !equality.Semantic.DeepEqual(got.Annotations, want) {
		t.Errorf("annotations = %v, want only the operator's %v", got.Annotations, want)
	}
	// Everything else the controller reads is as it was.
	want := before.DeepCopy()
	want.Labels, want.OwnerReferences, want.ManagedFields, want.Spec.Description = nil, nil, nil, ""
	want.Annotations = map[string]string{apikeysv1alpha1.RotateAnnotation: "2"}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("trimmed key:\n got %+v\nwant %+v", got, want)
	}
	// Another key of the same owner shares its Owner.
	other, err := trimApiKey(fullKey())
	if err != nil {
		t.Fatal(err)
	}
	if other.(*apikeysv1alpha1.ApiKey).Spec.Owner != got.Spec.Owner {
		t.Error("two keys of one owner hold two copies of it")
	}
}

func TestTrimRecord(t *testing.T) {
	used := metav1.NewTime(time.Date(2031, 3, 14, 0, 0, 0, 0, time.UTC))
	in := &apikeysv1alpha1.ApiKeyRecord{
		ObjectMeta: metav1.ObjectMeta{
			Name: "sha256-00", UID: "rec-uid", ResourceVersion: "7", Generation: 2,
			Labels:      map[string]string{apikeysv1alpha1.ApiKeyUIDLabel: "key-uid", "other": "x"},
			Annotations: map[string]string{lastApplied: "{}"}, Finalizers: []string{"example.com/f"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "apikey-operator"}},
		},
		Spec: apikeysv1alpha1.ApiKeyRecordSpec{
			TokenHash: "sha256:00", TokenHint: "ak_abcd…",
			ApiKey:   apikeysv1alpha1.ApiKeyReference{Namespace: "team-payments", Name: "billing-export", UID: "key-uid"},
			Username: "apikey:team-payments:billing-export", UID: string([]byte("key-uid")),
			Groups: []string{"apikeys", "apikeys:team-payments"}, Scopes: []string{"invoices:read"}, Issuance: 2,
			SecretName: "billing-export-token", ValidUntil: &used,
		},
		Status: apikeysv1alpha1.ApiKeyRecordStatus{LastUsedAt: &used},
	}
	before := in.DeepCopy()
	out, err := trimRecord(in)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*apikeysv1alpha1.ApiKeyRecord)
	if !equality.Semantic.DeepEqual(in, before) {
		t.Error("the transform changed the object it was given")
	}
	want := before.DeepCopy()
	want.Labels, want.Annotations, want.Finalizers, want.ManagedFields = nil, nil, nil, nil
	want.Spec.TokenHash = "" // its name holds it
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("trimmed record:\n got %+v\nwant %+v", got, want)
	}
	if restored := withTokenHash(*got); restored.Spec.TokenHash != before.Spec.TokenHash {
		t.Errorf("restored tokenHash %q, want %q", restored.Spec.TokenHash, before.Spec.TokenHash)
	}
	// A record not named after its hash (by hand) keeps the hash.
	in.Name = "by-hand"
	if out, _ := trimRecord(in); out.(*apikeysv1alpha1.ApiKeyRecord).Spec.TokenHash != before.Spec.TokenHash {
		t.Error("a record named otherwise lost its tokenHash")
	}
	if unsafe.StringData(got.Spec.UID) != unsafe.StringData(got.Spec.ApiKey.UID) {
		t.Error("spec.uid, the key's UID, is held twice")
	}
}

// TestStringTable checks that equal strings come back as one copy, and
// that the table stops growing at maxShared.
func TestStringTable(t *testing.T) {
	table := newStringTable()
	a := table.intern(string([]byte("team-payments")))
	b := table.intern(string([]byte("team-payments")))
	if a != b || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("equal strings were not shared")
	}
	for i := range 2 * maxShared {
		s := fmt.Sprint("value-", i)
		if got := table.intern(s); got != s {
			t.Fatalf("intern(%q) = %q", s, got)
		}
	}
	if n := len(table.strings); n != maxShared {
		t.Errorf("the table holds %d strings, want at most %d", n, maxShared)
	}
	list := []string{"x", "y"}
	if got := table.internAll(list); !slices.Equal(got, list) || &got[0] == &list[0] {
		t.Errorf("internAll = %q, a copy of %q", got, list)
	}
}

// TestStringTableLists checks that equal lists come back as one copy, full
// so that an append copies, and that the table stops growing at maxShared
// lists.
func TestStringTableLists(t *testing.T) {
	table := newStringTable()
	one, two := table.internList([]string{"a", "bc"}), table.internList([]string{"a", "bc"})
	if !slices.Equal(one, []string{"a", "bc"}) || &one[0] != &two[0] || cap(one) != len(one) {
		t.Errorf("internList = %q and %q, cap %d: not one full shared copy", one, two, cap(one))
	}
	if other := table.internList([]string{"ab", "c"}); &other[0] == &one[0] {
		t.Error("[ab c] shares [a bc]'s copy")
	}
	if table.internList(nil) != nil || table.internList([]string{}) == nil {
		t.Error("internList changed a nil or an empty list")
	}
	for i := range 2 * maxShared {
		l := []string{fmt.Sprint("value-", i)}
		if got := table.internList(l); !slices.Equal(got, l) || &got[0] == &l[0] {
			t.Fatalf("internList(%q) = %q, not a copy", l, got)
		}
	}
	if n := len(table.lists); n != maxShared {
		t.Errorf("the table holds %d lists, want at most %d", n, maxShared)
	}
	// Long values: the table stops at maxSharedBytes, whatever their count.
	long := newStringTable()
	for i := range 64 {
		l := []string{fmt.Sprint(i), strings.Repeat("x", 128<<10)}
		if got := long.internList(l); !slices.Equal(got, l) {
			t.Fatalf("internList of a long list changed it")
		}
	}
	if long.bytes > maxSharedBytes || len(long.lists) == 64 {
		t.Errorf("the table holds %d long lists, %d bytes; want at most %d bytes", len(long.lists), long.bytes, maxSharedBytes)
	}
}

var _ = Describe("The controller's cache", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("holds trimmed objects, and edits round-trip without touching what it dropped", func() {
		key := newKey(ns)
		key.Labels = map[string]string{"team": "payments"}
		key.Annotations = map[string]string{lastApplied: `{"spec":{"description":"Exports invoices"}}`, "example.com/note": "kept"}
		key.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: types.UID("cm-uid")}}
		key.Spec.Description = "Exports invoices"
		key.Spec.Scopes = []string{"invoices:read"}
		key.Spec.Secret.Labels = map[string]string{"app": "billing"}
		Expect(k8sClient.Create(ctx, key)).To(Succeed())
		key = waitReady(key)
		expectDropped := func() {
			GinkgoHelper()
			got := fetch(key)
			Expect(got.Spec.Description).To(Equal("Exports invoices"))
			Expect(got.Labels).To(Equal(key.Labels))
			Expect(got.Annotations).To(HaveKeyWithValue(lastApplied, key.Annotations[lastApplied]))
			Expect(got.Annotations).To(HaveKeyWithValue("example.com/note", "kept"))
			Expect(got.OwnerReferences).To(Equal(key.OwnerReferences))
			Expect(got.Finalizers).To(ContainElement(Finalizer))
		}
		expectDropped()

		By("caching the key without what the controller does not read")
		Eventually(func(g Gomega) {
			cached := &apikeysv1alpha1.ApiKey{}
			g.Expect(managerCache.Get(ctx, client.ObjectKeyFromObject(key), cached)).To(Succeed())
			g.Expect(cached.Status.RecordName).To(Equal(key.Status.RecordName))
			g.Expect(cached.Spec.Description).To(BeEmpty())
			g.Expect(cached.Labels).To(BeNil())
			g.Expect(cached.Annotations).To(BeNil())
			g.Expect(cached.OwnerReferences).To(BeNil())
			g.Expect(cached.Finalizers).To(ContainElement(Finalizer))
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			cached := &apikeysv1alpha1.ApiKeyRecord{}
			g.Expect(managerCache.Get(ctx, client.ObjectKey{Name: key.Status.RecordName}, cached)).To(Succeed())
			g.Expect(cached.Spec.ApiKey.UID).To(Equal(string(key.UID)))
			g.Expect(cached.Labels).To(BeNil())
			g.Expect(cached.ManagedFields).To(BeNil())
		}, timeout, interval).Should(Succeed())
		By("knowing the delivered Secret from its watch, with no cache of Secrets")
		Eventually(func() bool {
			return reconciler.secrets.controlledBy(ns, key.Status.SecretName, key.UID)
		}, timeout, interval).Should(BeTrue())

		By("editing the spec: the record follows, status is patched, the rest stays")
		edited := fetch(key)
		edited.Spec.Scopes = []string{"invoices:read", "invoices:write"}
		edited.Spec.Suspended = true
		Expect(k8sClient.Update(ctx, edited)).To(Succeed())
		waitCondition(key, apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonSuspended)
		Eventually(func(g Gomega) {
			rec := &apikeysv1alpha1.ApiKeyRecord{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: key.Status.RecordName}, rec)).To(Succeed())
			g.Expect(rec.Spec.Scopes).To(Equal(edited.Spec.Scopes))
			g.Expect(rec.Spec.Suspended).To(BeTrue())
		}, timeout, interval).Should(Succeed())
		expectDropped()

		By("rotating: a new record, the Secret rewritten, status patched, the rest stays")
		rotated := fetch(key)
		rotated.Spec.Suspended = false
		rotated.Annotations[apikeysv1alpha1.RotateAnnotation] = "1"
		Expect(k8sClient.Update(ctx, rotated)).To(Succeed())
		Eventually(func(g Gomega) {
			got := fetch(key)
			g.Expect(got.Status.LastRotateRequest).To(Equal("1"))
			g.Expect(got.Status.RecordName).NotTo(Equal(key.Status.RecordName))
		}, timeout, interval).Should(Succeed())
		key = waitReady(key)
		Eventually(func(g Gomega) {
			records := recordsOf(key)
			g.Expect(records).To(HaveLen(1), "the rotated-out record goes at once without a grace period")
			g.Expect(records[0].Name).To(Equal(key.Status.RecordName))
			g.Expect(records[0].Spec.Scopes).To(Equal(edited.Spec.Scopes))
		}, timeout, interval).Should(Succeed())
		readToken(key)
		expectDropped()
	})
})
