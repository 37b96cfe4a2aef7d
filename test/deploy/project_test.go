package deploy

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/afero"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kubebuilder/v4/pkg/config/store/yaml"
	_ "sigs.k8s.io/kubebuilder/v4/pkg/config/v3" // registers PROJECT version 3
	"sigs.k8s.io/kubebuilder/v4/pkg/machinery"
	"sigs.k8s.io/kubebuilder/v4/pkg/model/resource"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// TestProjectFile loads kubebuilder's PROJECT with kubebuilder's own parser
// and holds it to the tree: the module, every kind of the API package and
// nothing else, each one's scope as its CRD has it, its webhooks as the
// generated configurations have them, and a controller where there is one.
func TestProjectFile(t *testing.T) {
	store := yaml.New(machinery.Filesystem{FS: afero.NewOsFs()})
	if err := store.LoadFrom(filepath.Join(repoRoot, "PROJECT")); err != nil {
		t.Fatalf("kubebuilder cannot load PROJECT: %v", err)
	}
	cfg := store.Config()
	if !slices.Contains(cfg.GetPluginChain(), "go.kubebuilder.io/v4") {
		t.Errorf("PROJECT's layout is %v, want go.kubebuilder.io/v4", cfg.GetPluginChain())
	}
	if module := modulePath(t); cfg.GetRepository() != module {
		t.Errorf("PROJECT's repo is %s, go.mod's module %s", cfg.GetRepository(), module)
	}
	resources, err := cfg.GetResources()
	if err != nil {
		t.Fatal(err)
	}

	kinds := apiKinds(t)
	webhooks := generatedWebhooks(t)
	var listed []string
	for _, r := range resources {
		listed = append(listed, r.Kind)
		if r.QualifiedGroup() != apikeysv1alpha1.GroupVersion.Group || r.Version != apikeysv1alpha1.GroupVersion.Version ||
			!slices.Contains(kinds, r.Kind) {
			t.Errorf("PROJECT lists %s/%s %s, which api/v1alpha1 does not define", r.QualifiedGroup(), r.Version, r.Kind)
			continue
		}
		checkProjectResource(t, cfg.GetRepository(), r, webhooks)
	}
	slices.Sort(kinds)
	slices.Sort(listed)
	if !slices.Equal(kinds, listed) {
		t.Errorf("PROJECT lists kinds %v, api/v1alpha1 defines %v", listed, kinds)
	}
}

// checkProjectResource holds one of PROJECT's resources, of a kind the API
// package defines, to its package path, its CRD's scope, the generated
// webhooks and the controllers.
func checkProjectResource(t *testing.T, repo string, r resource.Resource, webhooks map[string]map[string]bool) {
	t.Helper()
	if want := repo + "/api/v1alpha1"; r.Path != want {
		t.Errorf("%s: path %s, want %s", r.Kind, r.Path, want)
	}
	if r.API == nil || r.API.Namespaced != crdNamespaced(t, r.Kind) {
		t.Errorf("%s: PROJECT's api.namespaced disagrees with its CRD's scope", r.Kind)
	}
	var defaulting, validation bool
	if r.Webhooks != nil {
		defaulting, validation = r.Webhooks.Defaulting, r.Webhooks.Validation
	}
	if defaulting != webhooks["mutating"][r.Kind] || validation != webhooks["validating"][r.Kind] {
		t.Errorf("%s: PROJECT says defaulting %t, validation %t; config/webhook has mutating %t, validating %t",
			r.Kind, defaulting, validation, webhooks["mutating"][r.Kind], webhooks["validating"][r.Kind])
	}
	_, err := os.Stat(filepath.Join(repoRoot, "internal", "controller", strings.ToLower(r.Kind)+"_controller.go"))
	if hasController := err == nil; r.Controller != hasController {
		t.Errorf("%s: PROJECT says controller %t; internal/controller has its controller: %t", r.Kind, r.Controller, hasController)
	}
}

// apiKinds are the kinds api/v1alpha1 defines (not their lists, nor the
// options types the scheme registers beside them).
func apiKinds(t *testing.T) []string {
	t.Helper()
	scheme := runtime.NewScheme()
	must(t, apikeysv1alpha1.AddToScheme(scheme))
	pkg := reflect.TypeFor[apikeysv1alpha1.ApiKey]().PkgPath()
	var kinds []string
	for kind, typ := range scheme.KnownTypes(apikeysv1alpha1.GroupVersion) {
		if typ.PkgPath() == pkg && !strings.HasSuffix(kind, "List") {
			kinds = append(kinds, kind)
		}
	}
	return kinds
}

func modulePath(t *testing.T) string {
	t.Helper()
	for line := range strings.Lines(string(readFile(t, "go.mod"))) {
		if module, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return module
		}
	}
	t.Fatal("go.mod names no module")
	return ""
}

// crdNamespaced reads kind's scope from its generated CRD.
func crdNamespaced(t *testing.T, kind string) bool {
	t.Helper()
	for _, u := range decode(t, readFile(t, filepath.Join("config", "crd", "bases",
		apikeysv1alpha1.GroupVersion.Group+"_"+strings.ToLower(kind)+"s.yaml"))) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		convert(t, u, crd)
		if crd.Spec.Names.Kind == kind {
			return crd.Spec.Scope == apiextensionsv1.NamespaceScoped
		}
	}
	t.Fatalf("no generated CRD for %s", kind)
	return false
}

// generatedWebhooks maps "mutating" and "validating" to the kinds whose
// resources the generated webhook configurations name.
func generatedWebhooks(t *testing.T) map[string]map[string]bool {
	t.Helper()
	kindOf := map[string]string{}
	for _, kind := range apiKinds(t) {
		kindOf[strings.ToLower(kind)+"s"] = kind
	}
	found := map[string]map[string]bool{"mutating": {}, "validating": {}}
	for _, u := range decode(t, readFile(t, filepath.Join("config", "webhook", "manifests.yaml"))) {
		var rules [][]admissionregistrationv1.RuleWithOperations
		switch u.GetKind() {
		case "MutatingWebhookConfiguration":
			c := &admissionregistrationv1.MutatingWebhookConfiguration{}
			convert(t, u, c)
			for _, w := range c.Webhooks {
				rules = append(rules, w.Rules)
			}
		case "ValidatingWebhookConfiguration":
			c := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			convert(t, u, c)
			for _, w := range c.Webhooks {
				rules = append(rules, w.Rules)
			}
		}
		which := strings.ToLower(strings.TrimSuffix(u.GetKind(), "WebhookConfiguration"))
		for _, rs := range rules {
			for _, r := range rs {
				for _, res := range r.Resources {
					if kind, ok := kindOf[res]; ok {
						found[which][kind] = true
					}
				}
			}
		}
	}
	return found
}
