package deploy

import (
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The API server's defaults for what the webhooks leave unset.
const (
	defaultWebhookPort    = 9443
	defaultFailurePolicy  = "Fail"
	defaultTimeoutSeconds = 10
	// metricsPort is where every pod serves /metrics.
	metricsPort = 8443
)

// replicas is d's replica count, defaulted as the API server does.
func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// port is the webhook server's port in r.
func (r *rendering) port() int32 {
	if r.webhookPort != 0 {
		return r.webhookPort
	}
	return defaultWebhookPort
}

// checkHighAvailability: with ha, a drain or a lost node or zone leaves a
// manager pod serving the admission webhooks, which fail closed: two
// replicas or more, spread over nodes and zones without ever leaving a pod
// unscheduled. The auth-only pods spread over nodes too.
func (r *rendering) checkHighAvailability(t *testing.T) {
	if r.auth != nil {
		r.checkSpread(t, r.auth, "kubernetes.io/hostname")
	}
	if !r.ha {
		return
	}
	if n := replicas(r.manager); n < 2 {
		t.Errorf("the manager runs %d replica: one restart blocks every ApiKey write", n)
	}
	r.checkSpread(t, r.manager, "kubernetes.io/hostname", "topology.kubernetes.io/zone")
}

// checkSpread: d's pods, and only they, spread over each of keys, as far as
// the scheduler can.
func (r *rendering) checkSpread(t *testing.T, d *appsv1.Deployment, keys ...string) {
	t.Helper()
	for _, key := range keys {
		i := slices.IndexFunc(d.Spec.Template.Spec.TopologySpreadConstraints, func(c corev1.TopologySpreadConstraint) bool {
			return c.TopologyKey == key
		})
		if i < 0 {
			t.Errorf("Deployment %s does not spread its pods over %s", d.Name, key)
			continue
		}
		c := d.Spec.Template.Spec.TopologySpreadConstraints[i]
		if c.WhenUnsatisfiable != corev1.ScheduleAnyway {
			t.Errorf("Deployment %s: spreading over %s is %s; on a cluster with one node or zone its pods would not schedule",
				d.Name, key, c.WhenUnsatisfiable)
		}
		r.checkSelectsOnly(t, "Deployment "+d.Name+"'s spread over "+key, c.LabelSelector, d)
	}
}

// checkSelectsOnly: selector picks d's pods and no other Deployment's.
func (r *rendering) checkSelectsOnly(t *testing.T, what string, selector *metav1.LabelSelector, d *appsv1.Deployment) {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(selector)
	if selector == nil || err != nil || s.Empty() {
		t.Errorf("%s: selector %v selects no pods or every pod (%v)", what, selector, err)
		return
	}
	for _, other := range r.servers() {
		if got, want := s.Matches(labels.Set(other.Spec.Template.Labels)), other == d; got != want {
			t.Errorf("%s: selector %v picks Deployment %s's pods: %t, want %t", what, selector, other.Name, got, want)
		}
	}
}

// checkDisruptionBudgets: each PodDisruptionBudget holds the pods of one
// Deployment, the auth-only one always and the manager with ha, and none
// blocks a drain outright.
func (r *rendering) checkDisruptionBudgets(t *testing.T) {
	budgets := map[*appsv1.Deployment]int{}
	for _, u := range byKind(r.objs, "PodDisruptionBudget") {
		pdb := &policyv1.PodDisruptionBudget{}
		convert(t, u, pdb)
		s, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if pdb.Spec.Selector == nil || err != nil || s.Empty() {
			t.Errorf("PodDisruptionBudget %s selects no pods or every pod", pdb.Name)
			continue
		}
		var held []*appsv1.Deployment
		for _, d := range r.servers() {
			if s.Matches(labels.Set(d.Spec.Template.Labels)) {
				held = append(held, d)
			}
		}
		if len(held) != 1 {
			t.Errorf("PodDisruptionBudget %s holds the pods of %d Deployments, want one", pdb.Name, len(held))
			continue
		}
		budgets[held[0]]++
		if !allowsDisruption(pdb, replicas(held[0])) {
			t.Errorf("PodDisruptionBudget %s lets no pod of Deployment %s (%d replicas) go: it blocks every drain",
				pdb.Name, held[0].Name, replicas(held[0]))
		}
	}
	for _, d := range r.servers() {
		want := 0
		if d == r.auth || d == r.manager && r.ha {
			want = 1
		}
		if budgets[d] != want {
			t.Errorf("Deployment %s is held by %d PodDisruptionBudgets, want %d", d.Name, budgets[d], want)
		}
	}
}

// allowsDisruption reports whether pdb lets at least one of n healthy pods be
// evicted.
func allowsDisruption(pdb *policyv1.PodDisruptionBudget, n int32) bool {
	if v := pdb.Spec.MaxUnavailable; v != nil {
		maxUnavailable, err := intstr.GetScaledValueFromIntOrPercent(v, int(n), true)
		return err == nil && maxUnavailable >= 1
	}
	if v := pdb.Spec.MinAvailable; v != nil {
		minAvailable, err := intstr.GetScaledValueFromIntOrPercent(v, int(n), true)
		return err == nil && int(n)-minAvailable >= 1
	}
	return true
}

// checkWebhookPolicy: webhook fails and times out as the install asked for,
// the API server's defaults unless told otherwise.
func (r *rendering) checkWebhookPolicy(t *testing.T, what string, webhook map[string]any) {
	t.Helper()
	wantPolicy, wantTimeout := r.failurePolicy, int64(r.timeoutSeconds)
	if wantPolicy == "" {
		wantPolicy = defaultFailurePolicy
	}
	if wantTimeout == 0 {
		wantTimeout = defaultTimeoutSeconds
	}
	policy, _, _ := unstructured.NestedString(webhook, "failurePolicy")
	if policy == "" {
		policy = defaultFailurePolicy
	}
	timeout, found, _ := unstructured.NestedInt64(webhook, "timeoutSeconds")
	if !found {
		timeout = defaultTimeoutSeconds
	}
	if policy != wantPolicy || timeout != wantTimeout {
		t.Errorf("%s %s: failurePolicy %s, timeoutSeconds %d; want %s, %d", what, webhook["name"], policy, timeout, wantPolicy, wantTimeout)
	}
}

// checkWebhookPort: the port the webhook server listens on (--webhook-port)
// is the one each pod declares and the one the webhook Service sends to.
func (r *rendering) checkWebhookPort(t *testing.T) {
	for _, d := range r.servers() {
		c := d.Spec.Template.Spec.Containers[0]
		flag := flagValue(c.Args, "--webhook-port")
		if flag == "" {
			flag = "9443"
		}
		if flag != strconv.Itoa(int(r.port())) {
			t.Errorf("Deployment %s: --webhook-port=%s, want %d", d.Name, flag, r.port())
		}
		i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "webhook-server" })
		if i < 0 || c.Ports[i].ContainerPort != r.port() {
			t.Errorf("Deployment %s does not declare port %d as webhook-server (ports %v)", d.Name, r.port(), c.Ports)
		}
	}
	if u, ok := byName(r.objs, "Service")[r.webhookService]; ok {
		for _, p := range service(t, u).Spec.Ports {
			if p.TargetPort.IntValue() != int(r.port()) && p.TargetPort.String() != "webhook-server" {
				t.Errorf("Service %s sends port %d to %s, not to the webhook server's %d", u.GetName(), p.Port, p.TargetPort.String(), r.port())
			}
		}
	}
}

// checkNetworkPolicies: with networkPolicy, every pod that serves is
// selected, the webhook server port is open to any caller (kube-apiserver
// calls from outside the pod network), or on the manager's pods with
// managerFrom to the callers named only, and /metrics to some; nothing
// limits egress, which would cut the pods off the API server. Without, none.
func (r *rendering) checkNetworkPolicies(t *testing.T) {
	policies := make([]*networkingv1.NetworkPolicy, 0, len(byKind(r.objs, "NetworkPolicy")))
	for _, u := range byKind(r.objs, "NetworkPolicy") {
		np := &networkingv1.NetworkPolicy{}
		convert(t, u, np)
		policies = append(policies, np)
		if slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			t.Errorf("NetworkPolicy %s limits egress", np.Name)
		}
	}
	if !r.networkPolicy {
		if len(policies) != 0 {
			t.Errorf("%d NetworkPolicies, want none", len(policies))
		}
		return
	}
	for _, d := range r.servers() {
		fromAnyone, fromSome, metricsFrom := r.opens(policies, labels.Set(d.Spec.Template.Labels))
		switch narrowed := d == r.manager && r.managerFrom; {
		case narrowed && fromAnyone:
			t.Errorf("a NetworkPolicy opens Deployment %s's webhook server port %d to every caller, not networkPolicy.managerFrom's",
				d.Name, r.port())
		case narrowed && !fromSome:
			t.Errorf("no NetworkPolicy opens Deployment %s's webhook server port %d to networkPolicy.managerFrom's callers", d.Name, r.port())
		case !narrowed && !fromAnyone:
			t.Errorf("no NetworkPolicy opens Deployment %s's webhook server port %d to every caller", d.Name, r.port())
		}
		if !metricsFrom {
			t.Errorf("no NetworkPolicy lets anyone scrape Deployment %s's /metrics (%d)", d.Name, metricsPort)
		}
	}
}

// opens reports whether the policies that select pods let anyone reach the
// webhook server port, or some callers, and someone /metrics.
func (r *rendering) opens(policies []*networkingv1.NetworkPolicy,
	pods labels.Set) (webhookFromAnyone, webhookFromSome, metricsFromSome bool) {
	for _, np := range policies {
		s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !s.Matches(pods) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				switch {
				case p.Port == nil:
				case p.Port.IntValue() == int(r.port()) && len(rule.From) == 0:
					webhookFromAnyone = true
				case p.Port.IntValue() == int(r.port()):
					webhookFromSome = true
				case p.Port.IntValue() == metricsPort && len(rule.From) != 0:
					metricsFromSome = true
				}
			}
		}
	}
	return webhookFromAnyone, webhookFromSome, metricsFromSome
}

// metricsService is the one Service in front of every pod's /metrics.
func (r *rendering) metricsService(t *testing.T) *corev1.Service {
	t.Helper()
	for _, u := range byKind(r.objs, "Service") {
		if s := service(t, u); len(s.Spec.Ports) == 1 && s.Spec.Ports[0].Port == metricsPort {
			return s
		}
	}
	t.Fatal("no metrics Service")
	return nil
}

// checkMetricsCert: with metricsCert, every pod serves /metrics with the
// certificate a cert-manager Certificate keeps in the Secret mounted where
// --metrics-cert-path points, issued by the webhook's CA Issuer for the
// metrics Service's names. Without, no pod is told of one.
func (r *rendering) checkMetricsCert(t *testing.T) {
	secret := ""
	for _, d := range r.servers() {
		c := d.Spec.Template.Spec.Containers[0]
		path := flagValue(c.Args, "--metrics-cert-path")
		if !r.metricsCert {
			if path != "" {
				t.Errorf("Deployment %s passes --metrics-cert-path=%s, which nothing fills", d.Name, path)
			}
			continue
		}
		if s := mountedSecret(d, path); path == "" || s == "" {
			t.Errorf("Deployment %s: --metrics-cert-path=%q is not a mounted Secret", d.Name, path)
		} else if secret != "" && s != secret {
			t.Errorf("Deployment %s serves metrics from Secret %s, another pod from %s", d.Name, s, secret)
		} else {
			secret = s
		}
	}
	if !r.metricsCert || secret == "" {
		return
	}
	cert := r.certificateFilling(secret)
	if cert == nil {
		t.Fatalf("no Certificate fills the metrics Secret %s", secret)
	}
	svc := r.metricsService(t)
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	for _, dns := range []string{svc.Name + "." + r.namespace + ".svc", svc.Name + "." + r.namespace + ".svc.cluster.local"} {
		if !slices.Contains(dnsNames, dns) {
			t.Errorf("the metrics Certificate %s does not name %s (has %v)", cert.GetName(), dns, dnsNames)
		}
	}
	issuer, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
	servingIssuer, _, _ := unstructured.NestedString(r.certificate(t).Object, "spec", "issuerRef", "name")
	if issuer != servingIssuer {
		t.Errorf("the metrics Certificate comes from Issuer %s, the serving certificate from %s", issuer, servingIssuer)
	}
}

// mountedSecret is the Secret d's first container mounts at path, or "".
func mountedSecret(d *appsv1.Deployment, path string) string {
	c := d.Spec.Template.Spec.Containers[0]
	m := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path })
	if path == "" || m < 0 {
		return ""
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == c.VolumeMounts[m].Name && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	return ""
}

// certificateFilling is the cert-manager Certificate whose Secret is secret.
func (r *rendering) certificateFilling(secret string) *unstructured.Unstructured {
	for _, c := range byKind(r.objs, "Certificate") {
		if s, _, _ := unstructured.NestedString(c.Object, "spec", "secretName"); s == secret {
			return c
		}
	}
	return nil
}

// checkScrapeAuth: a ServiceMonitor endpoint sends a token from a Secret
// (not the deprecated bearerTokenFile, which Prometheus reads from its own
// disk), one the chart creates for a ServiceAccount allowed to get /metrics;
// and verifies the metrics certificate whenever cert-manager issued it.
func (r *rendering) checkScrapeAuth(t *testing.T, monitor string, endpoint map[string]any) {
	t.Helper()
	for _, deprecated := range []string{"bearerTokenFile", "bearerTokenSecret"} {
		if _, ok := endpoint[deprecated]; ok {
			t.Errorf("ServiceMonitor %s uses the deprecated %s", monitor, deprecated)
		}
	}
	kind, _, _ := unstructured.NestedString(endpoint, "authorization", "type")
	secret, _, _ := unstructured.NestedString(endpoint, "authorization", "credentials", "name")
	key, _, _ := unstructured.NestedString(endpoint, "authorization", "credentials", "key")
	if kind != "Bearer" || secret == "" || key == "" {
		t.Errorf("ServiceMonitor %s: authorization is not a Bearer token from a Secret: %v", monitor, endpoint["authorization"])
	} else {
		r.checkScraperToken(t, secret, key)
	}

	insecure, _, _ := unstructured.NestedBool(endpoint, "tlsConfig", "insecureSkipVerify")
	if !r.metricsCert {
		return
	}
	if insecure {
		t.Errorf("ServiceMonitor %s skips verifying the metrics certificate that cert-manager issued", monitor)
	}
	caSecret, _, _ := unstructured.NestedString(endpoint, "tlsConfig", "ca", "secret", "name")
	caKey, _, _ := unstructured.NestedString(endpoint, "tlsConfig", "ca", "secret", "key")
	serverName, _, _ := unstructured.NestedString(endpoint, "tlsConfig", "serverName")
	served := mountedSecret(r.manager, flagValue(r.manager.Spec.Template.Spec.Containers[0].Args, "--metrics-cert-path"))
	cert := r.certificateFilling(caSecret)
	if cert == nil || caSecret != served || caKey != "ca.crt" {
		t.Errorf("ServiceMonitor %s does not trust ca.crt of the metrics certificate's Secret (ca %s/%s)", monitor, caSecret, caKey)
		return
	}
	if dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames"); !slices.Contains(dnsNames, serverName) {
		t.Errorf("ServiceMonitor %s verifies the name %q, which the metrics certificate does not carry (%v)", monitor, serverName, dnsNames)
	}
}

// checkScraperToken: Secret secret is a ServiceAccount token (under key)
// whose ServiceAccount a rendered ClusterRole bound to it lets get /metrics.
func (r *rendering) checkScraperToken(t *testing.T, secret, key string) {
	t.Helper()
	u, ok := byName(r.objs, "Secret")[secret]
	if !ok {
		t.Errorf("the ServiceMonitor reads its token from Secret %s, which is not rendered", secret)
		return
	}
	s := &corev1.Secret{}
	convert(t, u, s)
	sa := s.Annotations[corev1.ServiceAccountNameKey]
	if s.Type != corev1.SecretTypeServiceAccountToken || key != corev1.ServiceAccountTokenKey || sa == "" {
		t.Errorf("Secret %s is no ServiceAccount token under key %s", secret, key)
		return
	}
	if _, ok := byName(r.objs, "ServiceAccount")[sa]; !ok {
		t.Errorf("Secret %s is the token of ServiceAccount %s, which is not rendered", secret, sa)
	}
	for _, rule := range r.grants(t, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: r.namespace}) {
		if slices.Contains(rule.NonResourceURLs, "/metrics") && slices.Contains(rule.Verbs, "get") {
			return
		}
	}
	t.Errorf("ServiceAccount %s, whose token scrapes, may not get /metrics", sa)
}

// TestSingleReplicaDrains: replicas: 1 still installs, and its
// PodDisruptionBudget lets a drain evict the one pod; the budget can be
// switched off.
func TestSingleReplicaDrains(t *testing.T) {
	for _, tc := range []struct {
		set     string
		budgets int
	}{
		{"replicas=1", 1},
		{"replicas=1,podDisruptionBudget.enabled=false", 0},
		{"replicas=2,podDisruptionBudget.minAvailable=1", 1},
	} {
		objs := decode(t, helmTemplate(t, "helm-one", "--set", tc.set))
		manager := deployment(t, byName(objs, "Deployment")[helmRelease+"-controller-manager"])
		pdbs := byKind(objs, "PodDisruptionBudget")
		if len(pdbs) != tc.budgets {
			t.Errorf("--set %s: %d PodDisruptionBudgets, want %d", tc.set, len(pdbs), tc.budgets)
		}
		for _, u := range pdbs {
			pdb := &policyv1.PodDisruptionBudget{}
			convert(t, u, pdb)
			if !allowsDisruption(pdb, replicas(manager)) {
				t.Errorf("--set %s: PodDisruptionBudget %s blocks every drain of %d replicas", tc.set, pdb.Name, replicas(manager))
			}
		}
	}
}

// TestPodOptions: fullValues' pod labels and annotations, PriorityClass and
// ServiceAccount annotations land on each Deployment's pods and
// ServiceAccount; pod labels cannot take over the chart's own, which the
// Services and budgets select by.
func TestPodOptions(t *testing.T) {
	objs := decode(t, helmTemplate(t, "helm-full", "--set", fullValues,
		"--set", "podLabels.app\\.kubernetes\\.io/component=other,podLabels.app\\.kubernetes\\.io/instance=other"))
	for name, want := range map[string]string{
		"controller-manager": "eks.amazonaws.com/role-arn",
		"auth-server":        "iam.gke.io/gcp-service-account",
	} {
		d := deployment(t, byName(objs, "Deployment")[helmRelease+"-"+name])
		pod := d.Spec.Template
		if pod.Labels["team"] != "platform" || pod.Annotations["example.com/owner"] != "platform" {
			t.Errorf("Deployment %s's pods lack the podLabels or podAnnotations: %v, %v", d.Name, pod.Labels, pod.Annotations)
		}
		if pod.Annotations["kubectl.kubernetes.io/default-container"] == "" {
			t.Errorf("Deployment %s's podAnnotations replaced the chart's own", d.Name)
		}
		if !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) {
			t.Errorf("Deployment %s: podLabels took over the chart's labels: %v", d.Name, pod.Labels)
		}
		if pod.Spec.PriorityClassName != testPriorityClass {
			t.Errorf("Deployment %s: priorityClassName %q, want %q", d.Name, pod.Spec.PriorityClassName, testPriorityClass)
		}
		sa := byName(objs, "ServiceAccount")[pod.Spec.ServiceAccountName]
		if sa == nil || !strings.Contains(sa.GetAnnotations()[want], "apikey") {
			t.Errorf("ServiceAccount %s lacks the annotation %s", pod.Spec.ServiceAccountName, want)
		}
	}
}

// TestManagerServesAuthNeedsAuthServer: the chart refuses to leave nothing
// serving the auth endpoints.
func TestManagerServesAuthNeedsAuthServer(t *testing.T) {
	cmd := exec.Command(tool(t, "HELM", "helm-*"), "template", helmRelease, "dist/chart", "--set", "managerServesAuth=false")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "managerServesAuth=false needs authServer.enabled=true") {
		t.Errorf("helm template --set managerServesAuth=false: want a failure saying it needs authServer.enabled, got err=%v\n%s", err, out)
	}
}
