package controller

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

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
	// Long values: the table stops at maxSharedBytes, whatever their count.
	long := newStringTable()
	for i := range 64 {
		s := fmt.Sprint(i, strings.Repeat("x", 128<<10))
		if got := long.intern(s); got != s {
			t.Fatalf("intern of a long string changed it")
		}
	}
	if long.bytes > maxSharedBytes || len(long.strings) == 64 {
		t.Errorf("the table holds %d long strings, %d bytes; want at most %d bytes", len(long.strings), long.bytes, maxSharedBytes)
	}
}

var _ = Describe("What the controller keeps of ApiKeys and records", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("keeps no object, only a few fields from its watches, and edits touch nothing else", func() {
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

		By("caching no ApiKey and no record: the watches keep UIDs, names and resourceVersions; each pass reads them")
		for _, obj := range []client.Object{&apikeysv1alpha1.ApiKey{}, &apikeysv1alpha1.ApiKeyRecord{}} {
			var notCached *cache.ErrResourceNotCached
			Expect(errors.As(managerCache.Get(ctx, client.ObjectKeyFromObject(key), obj), &notCached)).
				To(BeTrue(), "the manager's cache holds %T", obj)
		}
		Eventually(func(g Gomega) {
			seen, ok := reconciler.keys.get(client.ObjectKeyFromObject(key))
			g.Expect(ok).To(BeTrue())
			g.Expect(seen.uid).To(Equal(digestOf(string(key.UID))))
			g.Expect(strconv.FormatUint(seen.resourceVersion, 10)).To(Equal(fetch(key).ResourceVersion))
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			rec := &apikeysv1alpha1.ApiKeyRecord{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: key.Status.RecordName}, rec)).To(Succeed())
			g.Expect(reconciler.records.of(digestOf(string(key.UID)))).To(ConsistOf(
				refNamed(rec.Name, must(strconv.ParseUint(rec.ResourceVersion, 10, 64)))))
		}, timeout, interval).Should(Succeed())
		By("knowing the delivered Secret from its watch, with no cache of Secrets, by the UID its record pinned")
		pinned := &apikeysv1alpha1.ApiKeyRecord{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: key.Status.RecordName}, pinned)).To(Succeed())
		Expect(pinned.Spec.SecretUID).NotTo(BeEmpty())
		Eventually(func() bool {
			return reconciler.secrets.controlledBy(ns, key.Status.SecretName, key.UID, types.UID(pinned.Spec.SecretUID))
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

func must[T any](v T, err error) T {
	GinkgoHelper()
	Expect(err).NotTo(HaveOccurred())
	return v
}
