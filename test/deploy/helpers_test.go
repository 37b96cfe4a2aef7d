package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/apikey-operator/apikey-operator/test/utils"
)

// repoRoot is the directory holding the Makefile, config/ and dist/.
var repoRoot = filepath.Join("..", "..")

func kustomizeBuild(t *testing.T, dir string) []byte {
	t.Helper()
	return run(t, repoRoot, tool(t, "KUSTOMIZE", "kustomize-*"), "build", dir)
}

func helmTemplate(t *testing.T, namespace string, args ...string) []byte {
	t.Helper()
	return run(t, repoRoot, tool(t, "HELM", "helm-*"),
		append([]string{"template", helmRelease, "dist/chart", "--namespace", namespace}, args...)...)
}

// readFile reads a file of the repository.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	must(t, err)
	return b
}

// run runs a tool in dir and returns its standard output.
func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// tool finds a pinned tool: $env, or the newest bin/<glob>.
func tool(t *testing.T, env, glob string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	found, _ := filepath.Glob(filepath.Join(repoRoot, "bin", glob))
	if len(found) == 0 {
		t.Fatalf("no bin/%s and %s is not set: run `make kustomize helm`", glob, env)
	}
	sort.Strings(found)
	p, err := filepath.Abs(found[len(found)-1])
	must(t, err)
	return p
}

// decode splits a multi-document YAML stream into objects.
func decode(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, err)
		js, err := utilyaml.ToJSON(doc)
		must(t, err)
		if js = bytes.TrimSpace(js); len(js) == 0 || string(js) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			t.Fatalf("decoding %s: %v", doc, err)
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		t.Fatal("the rendering is empty")
	}
	return objs
}

func byKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

func byName(objs []*unstructured.Unstructured, kind string) map[string]*unstructured.Unstructured {
	out := map[string]*unstructured.Unstructured{}
	for _, u := range byKind(objs, kind) {
		out[u.GetName()] = u
	}
	return out
}

func key(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}

func convert(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), key(u), err)
	}
}

func deployment(t *testing.T, u *unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	convert(t, u, d)
	return d
}

func service(t *testing.T, u *unstructured.Unstructured) *corev1.Service {
	t.Helper()
	s := &corev1.Service{}
	convert(t, u, s)
	return s
}

func container(d *appsv1.Deployment, name string) *corev1.Container {
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == name {
			return &d.Spec.Template.Spec.Containers[i]
		}
	}
	return nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// controlPlaneDir is where `make envtest` put kube-apiserver and etcd.
func controlPlaneDir(t *testing.T) string {
	t.Helper()
	dir, err := utils.ControlPlaneDir()
	must(t, err)
	return dir
}
