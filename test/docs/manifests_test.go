package docs

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/apikey-operator/apikey-operator/internal/testenv"
)

// defaultNamespace receives the namespaced examples that name no namespace.
const defaultNamespace = "docs-examples"

// notClusterObjects are documents with apiVersion and kind that are read by a
// tool, not applied to a cluster; they are reported as skipped, with why.
var notClusterObjects = map[schema.GroupVersionKind]string{
	{Group: "", Version: "v1", Kind: "Config"}: "a kubeconfig file " +
		"(kube-apiserver's --authentication-token-webhook-config-file), not an API object",
	{Group: "kind.x-k8s.io", Version: "v1alpha4", Kind: "Cluster"}: "kind's cluster configuration, " +
		"read by `kind create cluster`",
	{Group: "kubeadm.k8s.io", Version: "v1beta4", Kind: "ClusterConfiguration"}:   "kubeadm's configuration, read by kubeadm",
	{Group: "install.istio.io", Version: "v1alpha1", Kind: "IstioOperator"}:       "istioctl's install file, read by `istioctl install`",
	{Group: "kustomize.config.k8s.io", Version: "v1beta1", Kind: "Kustomization"}: "a kustomization.yaml, read by kustomize",
}

// thirdPartyKind is a kind from another project that the docs configure. Its
// CRD is installed with a permissive schema: the API server then checks the
// group, version, kind, scope, metadata and that the content is under spec,
// but not the fields of spec.
type thirdPartyKind struct {
	group, kind, plural string
	versions            []string // the first is the storage version
	namespaced          bool
}

var thirdPartyKinds = []thirdPartyKind{
	{"traefik.io", "Middleware", "middlewares", []string{"v1alpha1"}, true},
	{"traefik.io", "IngressRoute", "ingressroutes", []string{"v1alpha1"}, true},
	{"networking.istio.io", "DestinationRule", "destinationrules", []string{"v1", "v1beta1"}, true},
	{"networking.istio.io", "VirtualService", "virtualservices", []string{"v1", "v1beta1"}, true},
	{"security.istio.io", "AuthorizationPolicy", "authorizationpolicies", []string{"v1", "v1beta1"}, true},
	{"security.istio.io", "PeerAuthentication", "peerauthentications", []string{"v1", "v1beta1"}, true},
	{"gateway.networking.k8s.io", "HTTPRoute", "httproutes", []string{"v1"}, true},
	{"gateway.networking.k8s.io", "ReferenceGrant", "referencegrants", []string{"v1beta1"}, true},
	{"gateway.networking.k8s.io", "BackendTLSPolicy", "backendtlspolicies", []string{"v1"}, true},
	{"cert-manager.io", "Certificate", "certificates", []string{"v1"}, true},
	{"cert-manager.io", "Issuer", "issuers", []string{"v1"}, true},
	{"cert-manager.io", "ClusterIssuer", "clusterissuers", []string{"v1"}, false},
	{"kustomize.toolkit.fluxcd.io", "Kustomization", "kustomizations", []string{"v1"}, true},
}

// example is one YAML document of a page.
type example struct {
	block codeBlock
	index int // 1-based, within the block
	obj   *unstructured.Unstructured
}

func (e example) String() string {
	rel, _ := filepath.Rel(docsDir, e.block.page)
	name := e.obj.GetKind()
	if name == "" {
		name = "fragment"
	}
	if n := e.obj.GetName(); n != "" {
		name += " " + n
	}
	return fmt.Sprintf("%s:%d#%d %s", rel, e.block.line, e.index, name)
}

// TestDocsManifests applies every Kubernetes object in the ```yaml blocks of
// docs/**/*.md to a real API server, as a server-side dry run with strict
// field validation. Documents without apiVersion and kind (Helm values,
// proxy configuration) and the tool inputs in notClusterObjects are skipped
// by name, with the reason.
func TestDocsManifests(t *testing.T) {
	toApply := clusterObjects(t, docExamples(t))
	if len(toApply) == 0 {
		t.Fatal("no Kubernetes objects found in docs/")
	}

	cfg := startControlPlane(t)
	ctx := t.Context()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	installThirdPartyCRDs(ctx, t, dyn)
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		t.Fatal(err)
	}
	createNamespaces(ctx, t, dyn, toApply)

	for _, ex := range toApply {
		t.Run(ex.String(), func(t *testing.T) { dryRunApply(ctx, t, dyn, mapper, ex) })
	}
}

// docExamples is every YAML document in the ```yaml blocks of docs/**/*.md.
func docExamples(t *testing.T) []example {
	t.Helper()
	var examples []example
	for _, page := range markdownPages(t) {
		for _, block := range yamlBlocks(t, page) {
			for i, doc := range block.documents(t) {
				examples = append(examples, example{block: block, index: i + 1, obj: &unstructured.Unstructured{Object: doc}})
			}
		}
	}
	return examples
}

// clusterObjects returns the examples that are objects to apply; each of the
// others is reported as a skipped subtest that says why.
func clusterObjects(t *testing.T, examples []example) []example {
	t.Helper()
	var toApply []example
	for _, ex := range examples {
		if ex.obj.GetAPIVersion() == "" || ex.obj.GetKind() == "" {
			t.Run(ex.String(), func(t *testing.T) {
				t.Skip("not a Kubernetes object (no apiVersion and kind): a fragment such as Helm values or proxy configuration")
			})
			continue
		}
		if why, ok := notClusterObjects[ex.obj.GroupVersionKind()]; ok {
			t.Run(ex.String(), func(t *testing.T) { t.Skip(why) })
			continue
		}
		toApply = append(toApply, ex)
	}
	return toApply
}

// dryRunApply server-side applies ex as a dry run with strict field
// validation, in defaultNamespace if it is namespaced and names none, and
// fails t with the API server's reason if it is refused.
func dryRunApply(ctx context.Context, t *testing.T, dyn dynamic.Interface, mapper meta.RESTMapper, ex example) {
	t.Helper()
	gvk := ex.obj.GroupVersionKind()
	mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatalf("%s: the API server does not know %s (%v). If it comes from another project, add its CRD to "+
			"thirdPartyKinds; if it is read by a tool rather than applied, add it to notClusterObjects with the reason",
			ex.block, gvk, err)
	}
	obj := ex.obj.DeepCopy()
	resource := dyn.Resource(mapping.Resource)
	var target dynamic.ResourceInterface = resource
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(defaultNamespace)
		}
		target = resource.Namespace(obj.GetNamespace())
	} else if obj.GetNamespace() != "" {
		t.Fatalf("%s: %s is cluster-scoped but names namespace %q", ex.block, gvk.Kind, obj.GetNamespace())
	}
	body, err := json.Marshal(obj.Object)
	if err != nil {
		t.Fatal(err)
	}
	_, err = target.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		DryRun:          []string{metav1.DryRunAll},
		FieldManager:    "docs-examples",
		Force:           ptr.To(true),
		FieldValidation: metav1.FieldValidationStrict,
	})
	if err != nil {
		t.Errorf("%s: the API server refuses this %s:\n%v", ex.block, gvk.Kind, err)
	}
}

// startControlPlane starts kube-apiserver and etcd with our CRDs installed.
// The Service range is kubeadm's default, so the docs' fixed ClusterIPs fit.
func startControlPlane(t *testing.T) *rest.Config {
	t.Helper()
	env, _, err := testenv.Start(testenv.Options{APIServerFlags: map[string]string{"service-cluster-ip-range": "10.96.0.0/12"}})
	if err != nil {
		t.Fatalf("starting the test control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the test control plane: %v", err)
		}
	})
	return env.Config
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installThirdPartyCRDs installs a permissive CRD for each thirdPartyKind and
// waits until the API server serves them.
func installThirdPartyCRDs(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	crds := dyn.Resource(crdResource)
	for _, k := range thirdPartyKinds {
		if _, err := crds.Create(ctx, permissiveCRD(k), metav1.CreateOptions{}); err != nil {
			t.Fatalf("installing the CRD for %s.%s: %v", k.kind, k.group, err)
		}
	}
	for _, k := range thirdPartyKinds {
		name := k.plural + "." + k.group
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			crd, err := crds.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conditions {
				if c, ok := c.(map[string]any); ok && c["type"] == "Established" && c["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("the CRD %s never became established: %v", name, err)
		}
	}
}

func permissiveCRD(k thirdPartyKind) *unstructured.Unstructured {
	scope := "Cluster"
	if k.namespaced {
		scope = "Namespaced"
	}
	openObject := map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	versions := make([]any, 0, len(k.versions))
	for i, v := range k.versions {
		versions = append(versions, map[string]any{
			"name":    v,
			"served":  true,
			"storage": i == 0,
			"schema": map[string]any{"openAPIV3Schema": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"apiVersion": map[string]any{"type": "string"},
					"kind":       map[string]any{"type": "string"},
					"metadata":   map[string]any{"type": "object"},
					"spec":       openObject,
					"status":     openObject,
				},
			}},
		})
	}
	metadata := map[string]any{"name": k.plural + "." + k.group}
	if strings.HasSuffix(k.group, ".k8s.io") || strings.HasSuffix(k.group, ".kubernetes.io") {
		// The API server refuses CRDs in Kubernetes' own groups without
		// this; the Gateway API's CRDs carry it too.
		metadata["annotations"] = map[string]any{"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/3328"}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   metadata,
		"spec": map[string]any{
			"group": k.group,
			"scope": scope,
			"names": map[string]any{
				"kind":     k.kind,
				"listKind": k.kind + "List",
				"plural":   k.plural,
				"singular": strings.ToLower(k.kind),
			},
			"versions": versions,
		},
	}}
}

// createNamespaces creates, for real, every namespace the examples live in
// (a dry run into a namespace that does not exist fails).
func createNamespaces(ctx context.Context, t *testing.T, dyn dynamic.Interface, examples []example) {
	t.Helper()
	names := map[string]bool{defaultNamespace: true}
	for _, ex := range examples {
		if ns := ex.obj.GetNamespace(); ns != "" {
			names[ns] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for ns := range names {
		sorted = append(sorted, ns)
	}
	sort.Strings(sorted)
	namespaces := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"})
	for _, ns := range sorted {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns},
		}}
		if _, err := namespaces.Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
	}
}
