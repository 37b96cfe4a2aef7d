// Package deploy checks what users install: kustomize's config/default and
// config/self-signed (dist/install.yaml is the former) and the Helm chart in
// dist/chart. Each rendering must hang together (the Services select the pods
// they name, the certificate reaches every pod that serves 9443, the flags
// exist and name objects that exist) and a real API server must accept every
// object.
//
// The tests need kustomize and helm: bin/kustomize-* and bin/helm-* (`make
// kustomize helm`), or the KUSTOMIZE and HELM environment variables.
package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

const (
	// helmRelease makes the chart's names equal config/default's, so the two
	// can be compared object by object.
	helmRelease = "apikey-operator"
	// fullValues switches on everything the chart can add, and sets every
	// option away from its default.
	fullValues = "authServer.enabled=true,tls.mode=self-signed,metrics.serviceMonitor.enabled=true," +
		"metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true," +
		"replicas=3,podDisruptionBudget.maxUnavailable=2,networkPolicy.enabled=true," +
		"hostNetwork=true,webhook.port=10260,webhook.failurePolicy=Ignore,webhook.timeoutSeconds=5," +
		"managerServesAuth=false,authServer.hostNetwork=true,networkPolicy.managerFrom[0].ipBlock.cidr=192.0.2.0/24," +
		"priorityClassName=" + testPriorityClass + ",authServer.priorityClassName=" + testPriorityClass + "," +
		"podLabels.team=platform,podAnnotations.example\\.com/owner=platform," +
		"authServer.podLabels.team=platform,authServer.podAnnotations.example\\.com/owner=platform," +
		"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/apikey," +
		"authServer.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=apikey@example.iam.gserviceaccount.com"
	// fullCertManager is fullValues with cert-manager TLS (so a metrics
	// certificate) and every pod on the pod network, so that they can be held
	// to the "restricted" Pod Security Standard.
	fullCertManager = "tls.mode=cert-manager,hostNetwork=false,authServer.hostNetwork=false"
	// testPriorityClass is the PriorityClass fullValues names; the test
	// control plane gets it before the chart is applied.
	testPriorityClass = "apikey-operator-test"
)

// variant is one way to install the operator.
type variant struct {
	name      string
	namespace string // where its namespaced objects go
	render    func(t *testing.T) []byte
	// What the rendering should contain.
	selfSigned, authServer, monitoring bool
	// ha: two or more manager replicas, spread over nodes and zones, under
	// a PodDisruptionBudget.
	ha bool
	// hostNetwork: the manager runs on the node's network, which no
	// namespace enforcing the "baseline" or "restricted" Pod Security
	// Standard admits.
	hostNetwork bool
	// authHostNetwork: the same for the auth-only pods.
	authHostNetwork bool
	// networkPolicy: NetworkPolicies guard the pods' ports; managerFrom:
	// they open the manager's webhook server port to some callers only.
	networkPolicy, managerFrom bool
	// managerAuthOff: the manager serves admission alone, the auth-only
	// pods the auth endpoints (managerServesAuth=false).
	managerAuthOff bool
	// metricsCert: cert-manager issues the metrics server's certificate.
	metricsCert bool
	// The webhooks as configured; zero means the API server's defaults
	// (port 9443, Fail, 10 seconds).
	webhookPort    int32
	failurePolicy  string
	timeoutSeconds int32
}

func variants() []variant {
	return []variant{
		{
			name: "kustomize config/default", namespace: "apikey-operator-system",
			render:     func(t *testing.T) []byte { return kustomizeBuild(t, "config/default") },
			authServer: true, ha: true, metricsCert: true,
		},
		{
			// The committed one-file install: config/default for the release image.
			name: "dist/install.yaml", namespace: "apikey-operator-system",
			render:     func(t *testing.T) []byte { return readFile(t, "dist/install.yaml") },
			authServer: true, ha: true, metricsCert: true,
		},
		{
			name: "kustomize config/self-signed", namespace: "apikey-operator-system",
			render:     func(t *testing.T) []byte { return kustomizeBuild(t, "config/self-signed") },
			selfSigned: true, authServer: true, ha: true,
		},
		{
			name: "helm default values", namespace: "helm-default",
			render: func(t *testing.T) []byte { return helmTemplate(t, "helm-default") },
			ha:     true, metricsCert: true,
		},
		{
			name: "helm fullValues (everything on, self-signed, host network)", namespace: "helm-full",
			render:     func(t *testing.T) []byte { return helmTemplate(t, "helm-full", "--set", fullValues) },
			selfSigned: true, authServer: true, monitoring: true,
			ha: true, hostNetwork: true, authHostNetwork: true, networkPolicy: true, managerFrom: true, managerAuthOff: true,
			webhookPort: 10260, failurePolicy: "Ignore", timeoutSeconds: 5,
		},
		{
			name: "helm fullValues, " + fullCertManager, namespace: "helm-full-cert-manager",
			render: func(t *testing.T) []byte {
				return helmTemplate(t, "helm-full-cert-manager", "--set", fullValues, "--set", fullCertManager)
			},
			authServer: true, monitoring: true,
			ha: true, networkPolicy: true, managerFrom: true, managerAuthOff: true, metricsCert: true,
			webhookPort: 10260, failurePolicy: "Ignore", timeoutSeconds: 5,
		},
	}
}

// TestManifestsHangTogether reads each rendering without an API server: what
// one object names, another must be.
func TestManifestsHangTogether(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			newRendering(t, v).check(t)
		})
	}
}

// TestFlagsExist: every flag a Deployment passes is one the manager defines;
// an unknown flag would stop it at start.
func TestFlagsExist(t *testing.T) {
	manager := filepath.Join(t.TempDir(), "manager")
	run(t, repoRoot, "go", "build", "-o", manager, "./cmd")
	// -h exits 0 or 2 depending on the flag set; the usage is what counts.
	usage, _ := exec.Command(manager, "-h").CombinedOutput()
	for _, v := range variants() {
		for name, u := range byName(decode(t, v.render(t)), "Deployment") {
			for _, c := range deployment(t, u).Spec.Template.Spec.Containers {
				for _, arg := range c.Args {
					flag, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
					if !bytes.Contains(usage, []byte("  -"+flag+" ")) && !bytes.Contains(usage, []byte("  -"+flag+"\n")) {
						t.Errorf("%s: Deployment %s passes %s, which the manager does not define", v.name, name, arg)
					}
				}
			}
		}
	}
}

// TestInstallYAMLIsCurrent: the committed dist/install.yaml is config/default
// with the image the chart runs by default (its image.repository at its
// appVersion), so both install methods ship the same release.
func TestInstallYAMLIsCurrent(t *testing.T) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	var values struct {
		Image struct{ Repository string } `json:"image"`
	}
	must(t, yaml.Unmarshal(readFile(t, "dist/chart/Chart.yaml"), &chart))
	must(t, yaml.Unmarshal(readFile(t, "dist/chart/values.yaml"), &values))
	image := values.Image.Repository + ":" + chart.AppVersion
	want := run(t, repoRoot, "hack/kustomize-with-image.sh", tool(t, "KUSTOMIZE", "kustomize-*"), "config/default", image)
	if !bytes.Equal(readFile(t, "dist/install.yaml"), want) {
		t.Errorf("dist/install.yaml is not config/default for %s: run `make build-installer`", image)
	}
}

// TestChartCopiesAreCurrent: the chart renders controller-gen's CRDs, webhook
// configurations and manager role, and config/'s alerts and dashboard, from
// copies in dist/chart/files.
func TestChartCopiesAreCurrent(t *testing.T) {
	copies := map[string]string{
		"config/webhook/manifests.yaml":       "dist/chart/files/webhook/manifests.yaml",
		"config/rbac/role.yaml":               "dist/chart/files/rbac/role.yaml",
		"config/prometheus/rules.yaml":        "dist/chart/files/monitoring/rules.yaml",
		"config/grafana/apikey-operator.json": "dist/chart/files/monitoring/apikey-operator.json",
	}
	bases, err := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	must(t, err)
	crdCopies, err := filepath.Glob(filepath.Join(repoRoot, "dist", "chart", "files", "crds", "*.yaml"))
	must(t, err)
	if len(bases) == 0 || len(bases) != len(crdCopies) {
		t.Errorf("config/crd/bases has %d CRDs, dist/chart/files/crds %d: run `make manifests`", len(bases), len(crdCopies))
	}
	for _, b := range bases {
		copies["config/crd/bases/"+filepath.Base(b)] = "dist/chart/files/crds/" + filepath.Base(b)
	}
	for src, dst := range copies {
		want, err := os.ReadFile(filepath.Join(repoRoot, src))
		must(t, err)
		got, err := os.ReadFile(filepath.Join(repoRoot, dst))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not a copy of %s: run `make manifests`", dst, src)
		}
	}
}

// TestChartMatchesKustomize: with the release named like config/default's
// prefix, the chart grants the same permissions, registers the same webhooks
// and CRDs, and passes at least the same flags.
func TestChartMatchesKustomize(t *testing.T) {
	for _, p := range []struct {
		name        string
		chart, kust []*unstructured.Unstructured
		// complete: the chart renders all that kustomize does, not a subset.
		complete bool
	}{{
		name:  "default",
		chart: decode(t, helmTemplate(t, "helm-default")),
		kust:  decode(t, kustomizeBuild(t, "config/default")),
	}, {
		name:     "self-signed with auth server",
		chart:    decode(t, helmTemplate(t, "helm-full", "--set", fullValues)),
		kust:     decode(t, kustomizeBuild(t, "config/self-signed")),
		complete: true,
	}} {
		t.Run(p.name, func(t *testing.T) {
			for _, kind := range []string{"ClusterRole", "Role"} {
				compareField(t, kind, "rules", p.chart, p.kust, p.complete)
			}
			compareField(t, "CustomResourceDefinition", "spec", p.chart, p.kust, true)
			for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
				compareField(t, kind, "webhooks", withoutInstallChoices(t, p.chart), withoutInstallChoices(t, p.kust), true)
			}
			compareArgs(t, p.chart, p.kust, p.complete)
		})
	}
}

// compareField: each object of kind in both renderings has the same field;
// with complete, neither has one the other lacks.
func compareField(t *testing.T, kind, field string, chart, kust []*unstructured.Unstructured, complete bool) {
	t.Helper()
	chartObjs, kustObjs := byName(chart, kind), byName(kust, kind)
	for name, c := range chartObjs {
		k, ok := kustObjs[name]
		if !ok {
			t.Errorf("the chart has %s %s, kustomize does not", kind, name)
			continue
		}
		if !reflect.DeepEqual(c.Object[field], k.Object[field]) {
			t.Errorf("%s %s: the chart's %s differ from kustomize's:\nchart:     %v\nkustomize: %v",
				kind, name, field, c.Object[field], k.Object[field])
		}
	}
	for name := range kustObjs {
		if _, ok := chartObjs[name]; complete && !ok {
			t.Errorf("kustomize has %s %s, the chart does not", kind, name)
		}
	}
}

// compareArgs: the chart's containers pass every flag kustomize's do.
func compareArgs(t *testing.T, chart, kust []*unstructured.Unstructured, complete bool) {
	t.Helper()
	chartDeps := byName(chart, "Deployment")
	for name, k := range byName(kust, "Deployment") {
		c, ok := chartDeps[name]
		if !ok {
			if complete {
				t.Errorf("Deployment %s is not in the chart", name)
			}
			continue
		}
		chartDep := deployment(t, c)
		for _, kc := range deployment(t, k).Spec.Template.Spec.Containers {
			cc := container(chartDep, kc.Name)
			if cc == nil {
				t.Errorf("Deployment %s: the chart has no container %s", name, kc.Name)
				continue
			}
			for _, arg := range kc.Args {
				if !slices.Contains(cc.Args, arg) {
					t.Errorf("Deployment %s: the chart does not pass %s", name, arg)
				}
			}
		}
	}
}

// withoutInstallChoices copies the webhook configurations in objs, minus
// what each install chooses: the Service namespace, and the chart's
// webhook.failurePolicy and webhook.timeoutSeconds (TestManifestsHangTogether
// holds both renderings' defaults to the API server's).
func withoutInstallChoices(t *testing.T, objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if !strings.HasSuffix(u.GetKind(), "WebhookConfiguration") {
			continue
		}
		u = u.DeepCopy()
		webhooks, _, err := unstructured.NestedSlice(u.Object, "webhooks")
		must(t, err)
		for _, w := range webhooks {
			unstructured.RemoveNestedField(w.(map[string]any), "clientConfig", "service", "namespace")
			unstructured.RemoveNestedField(w.(map[string]any), "failurePolicy")
			unstructured.RemoveNestedField(w.(map[string]any), "timeoutSeconds")
		}
		must(t, unstructured.SetNestedSlice(u.Object, webhooks, "webhooks"))
		out = append(out, u)
	}
	return out
}

// TestKustomizePrometheus: config/default with its [PROMETHEUS] section on
// scrapes as the chart does: a token from a Secret, over TLS verified against
// the metrics certificate every pod serves. Nothing in config/prometheus
// skips verification.
func TestKustomizePrometheus(t *testing.T) {
	kustomize := tool(t, "KUSTOMIZE", "kustomize-*")
	config := filepath.Join(t.TempDir(), "config")
	must(t, os.CopyFS(config, os.DirFS(filepath.Join(repoRoot, "config"))))
	path := filepath.Join(config, "default", "kustomization.yaml")
	off, err := os.ReadFile(path)
	must(t, err)
	on := bytes.Replace(off, []byte("\n#- ../prometheus\n"), []byte("\n- ../prometheus\n"), 1)
	if bytes.Equal(on, off) {
		t.Fatal("config/default/kustomization.yaml has no `#- ../prometheus` line to uncomment")
	}
	must(t, os.WriteFile(path, on, 0o644))
	r := newRendering(t, variant{
		name: "kustomize config/default with ../prometheus", namespace: "apikey-operator-system",
		render:     func(t *testing.T) []byte { return run(t, config, kustomize, "build", "default") },
		authServer: true, ha: true, metricsCert: true,
	})
	r.checkWebhooks(t) // finds the serving certificate checkMetricsCert compares with
	r.checkMetricsCert(t)
	monitors := byKind(r.objs, "ServiceMonitor")
	if len(monitors) != 1 {
		t.Fatalf("want one ServiceMonitor, got %d", len(monitors))
	}
	endpoints, _, _ := unstructured.NestedSlice(monitors[0].Object, "spec", "endpoints")
	if len(endpoints) == 0 {
		t.Errorf("ServiceMonitor %s has no endpoints", monitors[0].GetName())
	}
	for _, e := range endpoints {
		endpoint := e.(map[string]any)
		if honor, _ := endpoint["honorLabels"].(bool); !honor {
			t.Errorf("ServiceMonitor %s: an endpoint without honorLabels moves a key's namespace label to exported_namespace", monitors[0].GetName())
		}
		r.checkScrapeAuth(t, monitors[0].GetName(), endpoint)
	}
	files, err := filepath.Glob(filepath.Join(repoRoot, "config", "prometheus", "*.yaml"))
	must(t, err)
	for _, f := range files {
		if b, err := os.ReadFile(f); err != nil || bytes.Contains(b, []byte("insecureSkipVerify")) {
			t.Errorf("%s mentions insecureSkipVerify (or is unreadable: %v)", f, err)
		}
	}
}

// TestKustomizeImage: `make deploy` and `make build-installer` set the image
// in config/manager only; both Deployments must get it.
func TestKustomizeImage(t *testing.T) {
	const image = "registry.example/apikey-operator:v9.9.9"
	kustomize := tool(t, "KUSTOMIZE", "kustomize-*")
	config := filepath.Join(t.TempDir(), "config")
	must(t, os.CopyFS(config, os.DirFS(filepath.Join(repoRoot, "config"))))
	run(t, filepath.Join(config, "manager"), kustomize, "edit", "set", "image", "controller="+image)
	deps := byName(decode(t, run(t, config, kustomize, "build", "default")), "Deployment")
	if len(deps) != 2 {
		t.Fatalf("want the manager and the auth-only Deployment, got %d Deployments", len(deps))
	}
	for name, u := range deps {
		for _, c := range deployment(t, u).Spec.Template.Spec.Containers {
			if c.Image != image {
				t.Errorf("Deployment %s container %s runs %s, want %s", name, c.Name, c.Image, image)
			}
		}
	}
}

// TestHelmLint: the chart passes `helm lint --strict` with its defaults and
// with everything on, and refuses a TLS mode it does not know.
func TestHelmLint(t *testing.T) {
	helm := tool(t, "HELM", "helm-*")
	run(t, repoRoot, helm, "lint", "--strict", "dist/chart")
	run(t, repoRoot, helm, "lint", "--strict", "dist/chart", "--set", fullValues)
	run(t, repoRoot, helm, "lint", "--strict", "dist/chart", "--set", fullValues, "--set", fullCertManager)

	cmd := exec.Command(helm, "template", helmRelease, "dist/chart", "--set", "tls.mode=acme")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mode") || !strings.Contains(string(out), "self-signed") {
		t.Errorf("helm template with tls.mode=acme: want a failure naming the TLS modes, got err=%v\n%s", err, out)
	}
}

// TestSchemaRefusesTypos: values.schema.json closes every object the chart
// defines, so a misspelled value fails `helm template` (and install and
// lint) with its name, instead of being ignored; free-form maps stay open.
func TestSchemaRefusesTypos(t *testing.T) {
	helm := tool(t, "HELM", "helm-*")
	for _, typo := range []struct{ set, name string }{
		{"replica=2", "replica"},
		{"metrics.serviceMonitr.enabled=true", "serviceMonitr"},
		{"authServer.podLabel.team=a", "podLabel"},
		{"webhook.timeout=5", "timeout"},
		{"podDisruptionBudget.maxUnavailabel=1", "maxUnavailabel"},
		{"metrics.serviceMonitor.authorization.secret=x", "secret"},
	} {
		for _, command := range [][]string{
			{"template", helmRelease, "dist/chart", "--set", typo.set},
			{"lint", "--strict", "dist/chart", "--set", typo.set},
		} {
			cmd := exec.Command(helm, command...)
			cmd.Dir = repoRoot
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "'"+typo.name+"' not allowed") {
				t.Errorf("helm %s --set %s: want a failure naming %q, got err=%v\n%s", command[0], typo.set, typo.name, err, out)
			}
		}
	}
	for _, open := range []string{
		"podLabels.anything=a", "nodeSelector.disk=ssd", "resources.limits.cpu=1",
		"affinity.nodeAffinity.x=y", "podSecurityContext.runAsUser=1000", "authServer.podAnnotations.a=b",
		"metrics.serviceMonitor.labels.release=prometheus", "tolerations[0].key=a",
	} {
		helmTemplate(t, "free-form", "--set", open)
	}
}

// TestAppliesToAPIServer server-side applies every variant to one API server,
// in turn, and reads every object back. The webhook configurations point at
// Services with no pods behind them, so nothing here creates an ApiKey.
func TestAppliesToAPIServer(t *testing.T) {
	renders := map[string][]*unstructured.Unstructured{}
	for _, v := range variants() {
		renders[v.name] = decode(t, v.render(t))
	}

	env := &envtest.Environment{
		BinaryAssetsDirectory: controlPlaneDir(t),
		CRDInstallOptions:     envtest.CRDInstallOptions{Paths: []string{filepath.Join("testdata", "crds.yaml")}},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the test control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping the test control plane: %v", err)
		}
	})
	scheme := runtime.NewScheme()
	must(t, clientgoscheme.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	must(t, err)
	// fullValues schedules the pods with a PriorityClass of the cluster's.
	priorityClass := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: testPriorityClass}, Value: 1000000}
	must(t, c.Create(context.Background(), priorityClass))

	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			objs := renders[v.name]
			if len(byKind(objs, "Namespace")) == 0 {
				// Helm installs into a namespace that exists; make it, as
				// restricted as config/default's unless the manager runs on
				// the node's network.
				level := "restricted"
				if v.hostNetwork || v.authHostNetwork {
					level = "privileged"
				}
				ns := &unstructured.Unstructured{}
				ns.SetAPIVersion("v1")
				ns.SetKind("Namespace")
				ns.SetName(v.namespace)
				ns.SetLabels(map[string]string{"pod-security.kubernetes.io/enforce": level})
				objs = append([]*unstructured.Unstructured{ns}, objs...)
			}
			applyAll(ctx, t, c, objs)

			// The namespace enforces its Pod Security Standard, and the
			// PriorityClass admission plugin checks priorityClassName; a
			// dry-run Pod from each Deployment's template must pass both.
			for name, u := range byName(objs, "Deployment") {
				d := deployment(t, u)
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: "dry-run-" + name, Namespace: d.Namespace, Labels: d.Spec.Template.Labels},
					Spec:       d.Spec.Template.Spec,
				}
				if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
					t.Errorf("a pod of Deployment %s is refused: %v", name, err)
				}
			}
		})
	}
}

// applyAll applies namespaces and CRDs first and waits for the CRDs, then
// everything else; every object must be accepted and readable afterwards.
func applyAll(ctx context.Context, t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	first := func(u *unstructured.Unstructured) bool {
		return u.GetKind() == "Namespace" || u.GetKind() == "CustomResourceDefinition"
	}
	for _, u := range objs {
		if first(u) {
			apply(ctx, t, c, u)
		}
	}
	for _, u := range byKind(objs, "CustomResourceDefinition") {
		waitEstablished(ctx, t, c, u.GetName())
	}
	for _, u := range objs {
		if !first(u) {
			apply(ctx, t, c, u)
		}
	}
	for _, u := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(u.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(u), got); err != nil {
			t.Errorf("%s %s is not there after applying: %v", u.GetKind(), key(u), err)
		}
	}
}

func apply(ctx context.Context, t *testing.T, c client.Client, u *unstructured.Unstructured) {
	t.Helper()
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()),
		client.FieldOwner("test"), client.ForceOwnership); err != nil {
		t.Errorf("%s %s is refused: %v", u.GetKind(), key(u), err)
	}
}

func waitEstablished(ctx context.Context, t *testing.T, c client.Client, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return false, nil
		}
		conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, cond := range conditions {
			if m, ok := cond.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("CRD %s is not established: %v", name, err)
	}
}
