// Package docs tests what docs/ promises: the example manifests are valid
// Kubernetes objects, the Argo CD health check answers as its tests say,
// kstatus (what Flux reads) answers as docs/argocd.md says, the
// forward-auth URLs the integration pages configure mean what the pages
// say they mean, the names docs/integrations/README.md gives for each install
// method are the ones kustomize and the chart render, relative links and
// anchors resolve, and every block a page says the end-to-end tests run is
// one they look up.
package docs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// docsDir is the repository's docs/ from this package.
var docsDir = filepath.Join("..", "..", "docs")

// argoHealthTests is Argo CD's health_test.yaml format.
type argoHealthTests struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

// argoHealthStatuses are the statuses Argo CD accepts from a health script;
// anything else it turns into Unknown.
var argoHealthStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

// TestArgoCDHealthCheck runs docs/argocd/health.lua on every case of
// docs/argocd/health_test.yaml, the way Argo CD runs a health check.
func TestArgoCDHealthCheck(t *testing.T) {
	dir := filepath.Join(docsDir, "argocd")
	script := readFile(t, filepath.Join(dir, "health.lua"))

	var cases argoHealthTests
	if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join(dir, "health_test.yaml"))), &cases); err != nil {
		t.Fatalf("health_test.yaml: %v", err)
	}
	if len(cases.Tests) == 0 {
		t.Fatal("health_test.yaml has no tests")
	}

	used := map[string]bool{}
	for _, tc := range cases.Tests {
		used[filepath.Clean(tc.InputPath)] = true
		t.Run(strings.TrimSuffix(filepath.Base(tc.InputPath), ".yaml"), func(t *testing.T) {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join(dir, tc.InputPath))), &obj); err != nil {
				t.Fatalf("%s: %v", tc.InputPath, err)
			}
			status, message, err := runArgoHealthScript(script, obj)
			if err != nil {
				t.Fatalf("health.lua failed: %v", err)
			}
			if !argoHealthStatuses[status] {
				t.Errorf("status %q is not one Argo CD accepts", status)
			}
			if status != tc.HealthStatus.Status || message != tc.HealthStatus.Message {
				t.Errorf("got {status: %q, message: %q}\nwant {status: %q, message: %q}",
					status, message, tc.HealthStatus.Status, tc.HealthStatus.Message)
			}
		})
	}

	inputs, err := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		rel, _ := filepath.Rel(dir, in)
		if !used[rel] {
			t.Errorf("%s is not used by any case in health_test.yaml", rel)
		}
	}
}

// TestArgoCDConfigMapCarriesTheScript checks that the argocd-cm example in
// docs/argocd.md holds health.lua unchanged, so copying either is the same.
func TestArgoCDConfigMapCarriesTheScript(t *testing.T) {
	const key = "resource.customizations.health.apikeys.dev_ApiKey"
	script := readFile(t, filepath.Join(docsDir, "argocd", "health.lua"))
	page := filepath.Join(docsDir, "argocd.md")

	found := 0
	for _, block := range yamlBlocks(t, page) {
		for _, doc := range block.documents(t) {
			data, _ := doc["data"].(map[string]any)
			inline, ok := data[key].(string)
			if !ok {
				continue
			}
			found++
			if inline != script {
				t.Errorf("%s:%d: the argocd-cm example's %s differs from docs/argocd/health.lua", page, block.line, key)
			}
		}
	}
	if found == 0 {
		t.Errorf("%s has no argocd-cm example with %s", page, key)
	}
}

// fluxHealth is what kstatus computes for each object under
// docs/argocd/testdata: the table "What kstatus makes of a key" in
// docs/argocd.md. A key with no conditions at all reads as Current, since
// kstatus cannot tell it from a kind that has none.
var fluxHealth = map[string]kstatus.Status{
	"healthy.yaml":                    kstatus.CurrentStatus,
	"rotating.yaml":                   kstatus.CurrentStatus,
	"expiring-soon.yaml":              kstatus.CurrentStatus,
	"rotating-and-expiring-soon.yaml": kstatus.CurrentStatus,
	"no-status.yaml":                  kstatus.CurrentStatus,
	"empty-status.yaml":               kstatus.CurrentStatus,
	"stale-generation.yaml":           kstatus.InProgressStatus,
	"retrying.yaml":                   kstatus.InProgressStatus,
	"ready-unknown.yaml":              kstatus.InProgressStatus,
	"suspended.yaml":                  kstatus.InProgressStatus,
	"expired.yaml":                    kstatus.FailedStatus,
	"invalid-expiry.yaml":             kstatus.FailedStatus,
	"owner-not-attested.yaml":         kstatus.FailedStatus,
	"forbidden-group.yaml":            kstatus.FailedStatus,
	"invalid-spec.yaml":               kstatus.FailedStatus,
	"secret-name-taken.yaml":          kstatus.FailedStatus,
	"expiring-soon-and-stalled.yaml":  kstatus.FailedStatus,
	"suspended-and-expired.yaml":      kstatus.FailedStatus,
}

// TestFluxHealthCheck runs kstatus, which Flux's health checks use, on the
// objects the Argo CD cases use, so both tools are held to the same keys.
func TestFluxHealthCheck(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join(docsDir, "argocd", "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no objects under docs/argocd/testdata")
	}
	for _, in := range inputs {
		name := filepath.Base(in)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			want, ok := fluxHealth[name]
			if !ok {
				t.Fatalf("%s has no expected kstatus status in fluxHealth", name)
			}
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(readFile(t, in)), &obj); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			res, err := kstatus.Compute(&unstructured.Unstructured{Object: obj})
			if err != nil {
				t.Fatalf("kstatus: %v", err)
			}
			if res.Status != want {
				t.Errorf("kstatus says %s (%q), want %s", res.Status, res.Message, want)
			}
		})
	}
}

// runArgoHealthScript evaluates script as Argo CD does (util/lua in Argo
// CD): a fresh interpreter with only the package, base and table libraries
// (Argo CD adds a restricted os library, which the script does not use), the
// object as the global obj, a one-second limit, and the returned table
// encoded as {status, message}.
func runArgoHealthScript(script string, obj map[string]any) (status, message string, err error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", luaValue(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", errNotATable
	}
	return lua.LVAsString(result.RawGetString("status")), lua.LVAsString(result.RawGetString("message")), nil
}

var errNotATable = errors.New("health.lua did not return a table")

// luaValue converts a decoded object the way Argo CD's decodeValue does.
func luaValue(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case string:
		return lua.LString(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(luaValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), luaValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
