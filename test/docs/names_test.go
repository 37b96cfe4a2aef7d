package docs

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/apikey-operator/apikey-operator/test/utils"
)

// rendering is one install method's objects.
type rendering struct {
	name string
	objs []*unstructured.Unstructured
}

// nameRow is a row of docs/integrations/README.md's "Names by install
// method", known by the start of its first cell: find reads its names from a
// rendering, the self-signed one if selfSigned.
type nameRow struct {
	prefix     string
	selfSigned bool
	find       func(t *testing.T, r rendering) []string
}

var nameRows = []nameRow{
	{"namespace", false, func(t *testing.T, r rendering) []string {
		return []string{r.deployment(t, false).GetNamespace()}
	}},
	{"Service of the manager", false, func(t *testing.T, r rendering) []string {
		return []string{r.webhookService(t)}
	}},
	{"Service of the auth-only pods", false, func(t *testing.T, r rendering) []string {
		return []string{r.serviceSelecting(t, r.deployment(t, true))}
	}},
	{"serving certificate Secret, cert-manager", false, func(t *testing.T, r rendering) []string {
		return []string{r.servingSecret(t)}
	}},
	{"serving certificate Secret, self-signed", true, func(t *testing.T, r rendering) []string {
		return []string{r.servingSecret(t)}
	}},
	{"the CA's own Secret, cert-manager", false, func(t *testing.T, r rendering) []string {
		for _, o := range r.objs {
			if isCA, _, _ := unstructured.NestedBool(o.Object, "spec", "isCA"); o.GetKind() == "Certificate" && isCA {
				name, _, _ := unstructured.NestedString(o.Object, "spec", "secretName")
				return []string{name}
			}
		}
		t.Errorf("%s: no CA Certificate", r.name)
		return nil
	}},
	{"the CA's own Secret, self-signed", true, func(t *testing.T, r rendering) []string {
		return []string{managerArg(t, r, "--webhook-ca-secret")}
	}},
	{"metrics Service", false, func(t *testing.T, r rendering) []string {
		var names []string
		for _, o := range r.objs {
			ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
			for _, p := range ports {
				if p, ok := p.(map[string]any); ok && o.GetKind() == "Service" && p["port"] == int64(8443) {
					names = append(names, o.GetName())
				}
			}
		}
		return names
	}},
	{"metrics certificate Secret, cert-manager", false, func(t *testing.T, r rendering) []string {
		return []string{r.metricsSecret(t)}
	}},
	{"labels selecting the manager pods", false, func(t *testing.T, r rendering) []string {
		return labelStrings(selector(r.deployment(t, false)))
	}},
	{"labels selecting the auth-only pods", false, func(t *testing.T, r rendering) []string {
		return labelStrings(selector(r.deployment(t, true)))
	}},
	{"labels every pod that serves", false, func(t *testing.T, r rendering) []string {
		both := map[string]string{}
		auth := selector(r.deployment(t, true))
		for k, v := range selector(r.deployment(t, false)) {
			if auth[k] == v {
				both[k] = v
			}
		}
		return labelStrings(both)
	}},
}

// TestNamesByInstallMethod renders every install method and checks each cell
// of the names table in docs/integrations/README.md against it.
func TestNamesByInstallMethod(t *testing.T) {
	columns := installRenderings(t)
	header, rows := namesTable(t)
	if len(rows) != len(nameRows) {
		t.Errorf("the names table has %d rows; the test knows %d", len(rows), len(nameRows))
	}
	for _, row := range rows {
		i := slices.IndexFunc(nameRows, func(r nameRow) bool { return strings.HasPrefix(row[0], r.prefix) })
		if i < 0 {
			t.Errorf("the names table's row %q is not one the test knows; add it to nameRows", row[0])
			continue
		}
		for c := 1; c < len(header) && c < len(row); c++ {
			sources, ok := columns[header[c]]
			if !ok {
				t.Fatalf("the names table's column %q is not one the test renders", header[c])
			}
			for _, src := range sources {
				checkCell(t, nameRows[i], src, row[0], header[c], row[c])
			}
		}
	}
}

// installSource is one rendering a column of the names table speaks for,
// cert-manager and self-signed, with what the column's placeholders stand
// for in it.
type installSource struct {
	certManager, selfSigned rendering
	placeholders            map[string]string
}

// checkCell compares the names a cell gives with those row finds in src.
func checkCell(t *testing.T, row nameRow, src installSource, rowTitle, column, cell string) {
	t.Helper()
	r := src.certManager
	if row.selfSigned {
		r = src.selfSigned
	}
	spans := codeSpans(cell)
	want := make([]string, 0, len(spans))
	for _, v := range spans {
		for p, s := range src.placeholders {
			v = strings.ReplaceAll(v, p, s)
		}
		want = append(want, v)
	}
	got := row.find(t, r)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%q, %s: the table says %q, %s renders %q", rowTitle, column, want, r.name, got)
	}
}

// installRenderings renders kustomize's config/default and config/self-signed,
// reads dist/install.yaml, and renders the chart for three releases, by the
// names table's column titles.
func installRenderings(t *testing.T) map[string][]installSource {
	t.Helper()
	kustomize, err := utils.FindTool("KUSTOMIZE", "kustomize-*", 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	helm, err := utils.FindTool("HELM", "helm-*", 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "..")
	render := func(name string, cmd ...string) rendering {
		out, err := exec.Command(cmd[0], cmd[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(cmd, " "), err)
		}
		objs, err := utils.DecodeManifests(out)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return rendering{name: name, objs: objs}
	}
	installYAML := filepath.Join(root, "dist", "install.yaml")
	installObjs, err := utils.DecodeManifests([]byte(readFile(t, installYAML)))
	if err != nil {
		t.Fatalf("%s: %v", installYAML, err)
	}
	chart := func(release, namespace string, set ...string) rendering {
		args := make([]string, 0, 8+2*len(set))
		args = append(args, helm, "template", release, filepath.Join(root, "dist", "chart"), "-n", namespace,
			"--set", "authServer.enabled=true")
		for _, s := range set {
			args = append(args, "--set", s)
		}
		return render("helm "+release+" "+strings.Join(set, " "), args...)
	}
	selfSigned := render("config/self-signed", kustomize, "build", filepath.Join(root, "config", "self-signed"))
	return map[string][]installSource{
		"kustomize": {
			{certManager: render("config/default", kustomize, "build", filepath.Join(root, "config", "default")), selfSigned: selfSigned},
			{certManager: rendering{name: installYAML, objs: installObjs}, selfSigned: selfSigned},
		},
		"Helm, release `apikey-operator` in `apikey-operator-system`": {
			{certManager: chart("apikey-operator", "apikey-operator-system"),
				selfSigned: chart("apikey-operator", "apikey-operator-system", "tls.mode=self-signed")},
		},
		"Helm, any release": {
			{certManager: chart("keys", "keys"), selfSigned: chart("keys", "keys", "tls.mode=self-signed"),
				placeholders: map[string]string{"<fullname>": "keys-apikey-operator", "<release>": "keys", "<namespace>": "keys"}},
			{certManager: chart("my-apikey-operator", "team-x"), selfSigned: chart("my-apikey-operator", "team-x", "tls.mode=self-signed"),
				placeholders: map[string]string{"<fullname>": "my-apikey-operator", "<release>": "my-apikey-operator", "<namespace>": "team-x"}},
		},
	}
}

// namesTable returns the header and rows of the first table under "Names by
// install method", each cell trimmed.
func namesTable(t *testing.T) (header []string, rows [][]string) {
	t.Helper()
	page := filepath.Join(docsDir, "integrations", "README.md")
	_, section, ok := strings.Cut(readFile(t, page), "\n## Names by install method\n")
	if !ok {
		t.Fatalf("%s has no section \"Names by install method\"", page)
	}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if header != nil {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case header == nil:
			header = cells
		case strings.HasPrefix(cells[0], "---"):
		default:
			rows = append(rows, cells)
		}
	}
	if len(rows) == 0 {
		t.Fatalf("%s: the names table has no rows", page)
	}
	return header, rows
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

func codeSpans(cell string) []string {
	matches := codeSpan.FindAllStringSubmatch(cell, -1)
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		out = append(out, m[1])
	}
	return out
}

// deployment returns the manager's Deployment, or the auth-only one: the
// Deployment whose container runs with --enable-controller=false.
func (r rendering) deployment(t *testing.T, authOnly bool) *unstructured.Unstructured {
	t.Helper()
	for _, o := range r.objs {
		if o.GetKind() == "Deployment" && slices.Contains(containerArgs(o), "--enable-controller=false") == authOnly {
			return o
		}
	}
	t.Fatalf("%s: no Deployment (auth-only: %v)", r.name, authOnly)
	return nil
}

// webhookService is the Service the validating webhook calls; it must
// select the manager pods.
func (r rendering) webhookService(t *testing.T) string {
	t.Helper()
	for _, o := range r.objs {
		if o.GetKind() != "ValidatingWebhookConfiguration" {
			continue
		}
		hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
		name, _, _ := unstructured.NestedString(hooks[0].(map[string]any), "clientConfig", "service", "name")
		if selecting := r.serviceSelecting(t, r.deployment(t, false)); selecting != name {
			t.Errorf("%s: the webhooks call Service %s, but %s selects the manager pods", r.name, name, selecting)
		}
		return name
	}
	t.Fatalf("%s: no ValidatingWebhookConfiguration", r.name)
	return ""
}

// serviceSelecting is the Service on the webhook-server port whose selector
// picks d's pods.
func (r rendering) serviceSelecting(t *testing.T, d *unstructured.Unstructured) string {
	t.Helper()
	podLabels, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
	var found []string
	for _, o := range r.objs {
		sel, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector")
		if o.GetKind() != "Service" || len(sel) == 0 || o.GetNamespace() != d.GetNamespace() {
			continue
		}
		matches := true
		for k, v := range sel {
			matches = matches && podLabels[k] == v
		}
		ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
		if matches && len(ports) > 0 && ports[0].(map[string]any)["port"] == int64(443) {
			found = append(found, o.GetName())
		}
	}
	if len(found) != 1 {
		t.Errorf("%s: Services on 443 selecting the pods of %s: %q, want one", r.name, d.GetName(), found)
		return ""
	}
	return found[0]
}

// metricsSecret is the Secret both Deployments mount as the metrics
// server's certificate (volume metrics-certs).
func (r rendering) metricsSecret(t *testing.T) string {
	t.Helper()
	return r.sharedSecret(t, "/metrics", func(d *unstructured.Unstructured) string {
		return volumeSecret(d, "metrics-certs")
	})
}

// servingSecret is the Secret the manager serves its certificate from:
// mounted (cert-manager) or named by --webhook-cert-secret (self-signed).
// The auth-only pods must read the same one.
func (r rendering) servingSecret(t *testing.T) string {
	t.Helper()
	return r.sharedSecret(t, "its endpoints", func(d *unstructured.Unstructured) string {
		if name := volumeSecret(d, "webhook-certs"); name != "" {
			return name
		}
		for _, a := range containerArgs(d) {
			if v, ok := strings.CutPrefix(a, "--webhook-cert-secret="); ok {
				return v
			}
		}
		return ""
	})
}

// sharedSecret is the Secret secretOf finds in the manager's Deployment,
// checked to be the one the auth-only pods serve what from too.
func (r rendering) sharedSecret(t *testing.T, what string, secretOf func(*unstructured.Unstructured) string) string {
	t.Helper()
	manager, auth := secretOf(r.deployment(t, false)), secretOf(r.deployment(t, true))
	if manager != auth {
		t.Errorf("%s: the manager serves %s from Secret %q, the auth-only pods from %q", r.name, what, manager, auth)
	}
	return manager
}

// volumeSecret is the Secret d's pods mount as the named volume, or "".
func volumeSecret(d *unstructured.Unstructured, volume string) string {
	volumes, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
	for _, v := range volumes {
		if name, ok, _ := unstructured.NestedString(v.(map[string]any), "secret", "secretName"); ok &&
			v.(map[string]any)["name"] == volume {
			return name
		}
	}
	return ""
}

// managerArg is the value of the manager's flag name.
func managerArg(t *testing.T, r rendering, name string) string {
	t.Helper()
	for _, a := range containerArgs(r.deployment(t, false)) {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	t.Errorf("%s: the manager has no %s", r.name, name)
	return ""
}

func containerArgs(d *unstructured.Unstructured) []string {
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	var args []string
	for _, c := range containers {
		a, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "args")
		args = append(args, a...)
	}
	return args
}

func selector(d *unstructured.Unstructured) map[string]string {
	m, _, _ := unstructured.NestedStringMap(d.Object, "spec", "selector", "matchLabels")
	return m
}

func labelStrings(labels map[string]string) []string {
	out := make([]string, 0, len(labels))
	for k, v := range labels {
		out = append(out, k+": "+v)
	}
	return out
}
