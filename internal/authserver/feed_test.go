package authserver

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// TestKeyFeedReadsPastAnUnreadableKey stores an ApiKey whose ttl no Go
// program can decode (3000000h overflows time.Duration), as releases before
// the CRD bounded durations let any tenant do, and checks that the auth
// server's index still learns of other keys' suspension and deletion: it
// decodes of an ApiKey only what it reads, so no other field can stop its
// listings, and revocation with them.
func TestKeyFeedReadsPastAnUnreadableKey(t *testing.T) {
	ctx, cancel, env, admin := startControlPlane(t)

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-payments"}}
	if err := admin.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	storeUnreadableKey(ctx, t, admin, ns.Name)

	_, index := startAuthOnly(ctx, cancel, t, env, admin)
	until(ctx, t, "the index has synced, the unreadable key listed with the rest", func() bool { return index.Synced() })

	key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "billing-export"}}
	if err := admin.Create(ctx, key); err != nil {
		t.Fatal(err)
	}
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "past-unreadable")
	if err := admin.Create(ctx, issuedRecord(tok, key)); err != nil {
		t.Fatal(err)
	}
	code := func() Code { _, c := index.Verify(tok, time.Now()); return c }
	until(ctx, t, "the token authenticates", func() bool { return code() == CodeValid })

	key.Spec.Suspended = true
	if err := admin.Update(ctx, key); err != nil {
		t.Fatal(err)
	}
	until(ctx, t, "the suspension reaches the index", func() bool { return code() == CodeSuspended })
	if err := admin.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	until(ctx, t, "the deletion reaches the index", func() bool { return code() == CodeNotFound })
}

// storeUnreadableKey stores, in namespace, an ApiKey with ttl 3000000h: it
// takes the CRD's bound off spec.ttl for the write, as the CRD of an
// earlier release had none, and puts it back.
func storeUnreadableKey(ctx context.Context, t *testing.T, admin client.Client, namespace string) {
	t.Helper()
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := admin.Get(ctx, client.ObjectKey{Name: "apikeys." + apikeysv1alpha1.GroupVersion.Group}, crd); err != nil {
		t.Fatal(err)
	}
	original := crd.DeepCopy()
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	v := versions[0].(map[string]any)
	unstructured.RemoveNestedField(v, "schema", "openAPIV3Schema", "properties", "spec", "properties", "ttl", "x-kubernetes-validations")
	if err := unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if err := admin.Update(ctx, crd); err != nil {
		t.Fatal(err)
	}
	bad := &unstructured.Unstructured{}
	bad.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind("ApiKey"))
	bad.SetNamespace(namespace)
	bad.SetName("unreadable")
	if err := unstructured.SetNestedField(bad.Object, "3000000h", "spec", "ttl"); err != nil {
		t.Fatal(err)
	}
	until(ctx, t, "kube-apiserver stores the unreadable key under the unbounded CRD", func() bool {
		return admin.Create(ctx, bad.DeepCopy()) == nil
	})
	if err := admin.Get(ctx, client.ObjectKeyFromObject(crd), crd); err != nil {
		t.Fatal(err)
	}
	original.SetResourceVersion(crd.GetResourceVersion())
	if err := admin.Update(ctx, original); err != nil {
		t.Fatal(err)
	}
}
