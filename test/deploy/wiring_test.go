package deploy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// certPath is where every pod that serves port 9443 finds its certificate.
const certPath = "/tmp/k8s-webhook-server/serving-certs"

// rendering is one variant's objects, with what the checks look up often.
type rendering struct {
	variant
	objs          []*unstructured.Unstructured
	manager, auth *appsv1.Deployment // auth is nil without the auth-only Deployment
	// webhookService is the Service both webhook configurations call;
	// certSecret the Secret the serving certificate comes from.
	webhookService, certSecret string
}

func newRendering(t *testing.T, v variant) *rendering {
	t.Helper()
	r := &rendering{variant: v, objs: decode(t, v.render(t))}
	for name, u := range byName(r.objs, "Deployment") {
		switch {
		case strings.HasSuffix(name, "-controller-manager"):
			r.manager = deployment(t, u)
		case strings.HasSuffix(name, "-auth-server"):
			r.auth = deployment(t, u)
		default:
			t.Errorf("unexpected Deployment %s", name)
		}
	}
	if r.manager == nil {
		t.Fatal("no manager Deployment (*-controller-manager)")
	}
	if (r.auth != nil) != v.authServer {
		t.Fatalf("auth-only Deployment present: %t, want %t", r.auth != nil, v.authServer)
	}
	if container(r.manager, "manager") == nil || r.auth != nil && container(r.auth, "auth-server") == nil {
		t.Fatal("the containers are not named manager and auth-server")
	}
	return r
}

// check runs every check in an order where each finds what it needs.
func (r *rendering) check(t *testing.T) {
	// Every replica runs the controller: without an elected leader, two
	// would issue the same key.
	if !slices.Contains(container(r.manager, "manager").Args, "--leader-elect") {
		t.Errorf("the manager (%d replicas) does not elect a leader", replicas(r.manager))
	}
	r.checkHighAvailability(t)
	r.checkWebhooks(t)
	for _, d := range r.servers() {
		r.checkCertificateSource(t, d)
		r.checkPodSpec(t, d)
	}
	if r.auth != nil {
		r.checkAuthServer(t)
	}
	r.checkDisruptionBudgets(t)
	r.checkServices(t)
	r.checkWebhookPort(t)
	r.checkNetworkPolicies(t)
	if r.selfSigned {
		r.checkSelfSigned(t)
	} else {
		r.checkCertManager(t)
	}
	r.checkMetricsCert(t)
}

// servers are the Deployments whose pods serve port 9443.
func (r *rendering) servers() []*appsv1.Deployment {
	if r.auth == nil {
		return []*appsv1.Deployment{r.manager}
	}
	return []*appsv1.Deployment{r.manager, r.auth}
}

// checkWebhooks: both webhook configurations call one Service in the
// install's namespace, get their CA from the mode's source, and (self-signed)
// are the ones the manager is told to inject.
func (r *rendering) checkWebhooks(t *testing.T) {
	managerArgs := container(r.manager, "manager").Args
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		configs := byKind(r.objs, kind)
		if len(configs) != 1 {
			t.Fatalf("want one %s, got %d", kind, len(configs))
		}
		u := configs[0]
		webhooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
		for _, w := range webhooks {
			svc, _, _ := unstructured.NestedStringMap(w.(map[string]any), "clientConfig", "service")
			if svc["namespace"] != r.namespace {
				t.Errorf("%s %s calls a Service in %q, want %q", kind, u.GetName(), svc["namespace"], r.namespace)
			}
			if r.webhookService != "" && svc["name"] != r.webhookService {
				t.Errorf("the webhooks call two Services, %s and %s", r.webhookService, svc["name"])
			}
			r.webhookService = svc["name"]
			r.checkWebhookPolicy(t, kind+" "+u.GetName(), w.(map[string]any))
		}
		annotation := u.GetAnnotations()["cert-manager.io/inject-ca-from"]
		switch {
		case r.selfSigned && annotation != "":
			t.Errorf("%s %s asks cert-manager for a CA (%s) in self-signed mode", kind, u.GetName(), annotation)
		case !r.selfSigned && annotation != r.namespace+"/"+r.certificate(t).GetName():
			t.Errorf("%s %s: cert-manager.io/inject-ca-from is %q, want the Certificate", kind, u.GetName(), annotation)
		}
		if r.selfSigned && !slices.Contains(managerArgs, flagFor(kind)+"="+u.GetName()) {
			t.Errorf("the manager is not told %s=%s", flagFor(kind), u.GetName())
		}
	}
}

// checkCertificateSource: d's pods find the serving certificate at certPath:
// cert-manager's Secret mounted there, or (self-signed) a writable directory
// the operator fills from its own Secret. Every pod uses the manager's Secret.
func (r *rendering) checkCertificateSource(t *testing.T, d *appsv1.Deployment) {
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--webhook-cert-path="+certPath) {
		t.Errorf("Deployment %s does not pass --webhook-cert-path=%s", d.Name, certPath)
	}
	mount, source := certVolume(d)
	if mount == nil || source == nil {
		t.Errorf("Deployment %s mounts no volume at %s", d.Name, certPath)
		return
	}
	secret := ""
	switch {
	case r.selfSigned && (source.EmptyDir == nil || mount.ReadOnly):
		t.Errorf("Deployment %s: %s must be a writable emptyDir in self-signed mode", d.Name, certPath)
	case r.selfSigned:
		secret = flagValue(c.Args, "--webhook-cert-secret")
	case source.Secret == nil:
		t.Errorf("Deployment %s: the volume at %s is not a Secret", d.Name, certPath)
	default:
		secret = source.Secret.SecretName
	}
	switch {
	case secret == "":
		t.Errorf("Deployment %s: no certificate Secret", d.Name)
	case d == r.manager:
		r.certSecret = secret
	case secret != r.certSecret:
		t.Errorf("Deployment %s takes its certificate from Secret %q, the manager from %q", d.Name, secret, r.certSecret)
	}
}

// certVolume is how d's first container mounts certPath and what from; nil
// when it does not.
func certVolume(d *appsv1.Deployment) (*corev1.VolumeMount, *corev1.VolumeSource) {
	c := d.Spec.Template.Spec.Containers[0]
	mount := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == certPath })
	if mount < 0 {
		return nil, nil
	}
	volumes := d.Spec.Template.Spec.Volumes
	vol := slices.IndexFunc(volumes, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[mount].Name })
	if vol < 0 {
		return &c.VolumeMounts[mount], nil
	}
	return &c.VolumeMounts[mount], &volumes[vol].VolumeSource
}

// checkPodSpec: d's pods run as non-root under a ServiceAccount that exists.
func (r *rendering) checkPodSpec(t *testing.T, d *appsv1.Deployment) {
	pod := d.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("Deployment %s does not run as non-root", d.Name)
	}
	if _, ok := byName(r.objs, "ServiceAccount")[pod.ServiceAccountName]; !ok {
		t.Errorf("Deployment %s runs as ServiceAccount %q, which is not rendered", d.Name, pod.ServiceAccountName)
	}
	if want := d == r.manager && r.hostNetwork || d == r.auth && r.authHostNetwork; pod.HostNetwork != want {
		t.Errorf("Deployment %s: hostNetwork is %t, want %t", d.Name, pod.HostNetwork, want)
	}
	// On the node's network, ClusterFirst would resolve through the node's
	// resolver, which knows no Service names.
	if pod.HostNetwork && pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("Deployment %s runs on the node's network with dnsPolicy %q, want ClusterFirstWithHostNet", d.Name, pod.DNSPolicy)
	}
}

// checkAuthServer: the auth-only Deployment only serves, runs the manager's
// image, is ready on /readyz, and has a Service and a PodDisruptionBudget of
// its own.
func (r *rendering) checkAuthServer(t *testing.T) {
	args := container(r.auth, "auth-server").Args
	for _, want := range []string{"--enable-controller=false", "--enable-admission=false"} {
		if !slices.Contains(args, want) {
			t.Errorf("the auth-only Deployment does not pass %s", want)
		}
	}
	if slices.ContainsFunc(args, func(arg string) bool { return strings.HasPrefix(arg, "--leader-elect") }) {
		t.Error("the auth-only Deployment elects a leader; it only serves")
	}
	if slices.ContainsFunc(args, func(arg string) bool { return strings.HasPrefix(arg, "--enable-auth-server") }) {
		t.Error("the auth-only Deployment is told whether to serve the auth endpoints; it is there to")
	}
	if got := slices.Contains(container(r.manager, "manager").Args, "--enable-auth-server=false"); got != r.managerAuthOff {
		t.Errorf("the manager passes --enable-auth-server=false: %t, want %t", got, r.managerAuthOff)
	}
	authC, managerC := r.auth.Spec.Template.Spec.Containers[0], r.manager.Spec.Template.Spec.Containers[0]
	if authC.Image != managerC.Image {
		t.Errorf("the auth-only pods run %s, the manager %s", authC.Image, managerC.Image)
	}
	if authC.ReadinessProbe == nil || authC.ReadinessProbe.HTTPGet == nil || authC.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("the auth-only pods are not ready on /readyz")
	}
	if labels.SelectorFromSet(r.manager.Spec.Selector.MatchLabels).Matches(labels.Set(r.auth.Spec.Template.Labels)) {
		t.Error("the manager's selector matches the auth-only pods")
	}

	authPods, managerPods := labels.Set(r.auth.Spec.Template.Labels), labels.Set(r.manager.Spec.Template.Labels)
	if svc := r.serviceEndingIn(t, "-auth-server"); svc != nil {
		checkSelects(t, "Service "+svc.Name, svc.Spec.Selector, authPods, managerPods)
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.IntValue() != int(r.port()) {
			t.Errorf("Service %s: want 443 → %d, got %v", svc.Name, r.port(), svc.Spec.Ports)
		}
	}
}

// checkServices: the webhook Service picks the manager's pods only, the one
// metrics Service every pod, and a ServiceMonitor exists only if asked for.
func (r *rendering) checkServices(t *testing.T) {
	managerPods := labels.Set(r.manager.Spec.Template.Labels)
	var authPods labels.Set
	if r.auth != nil {
		authPods = r.auth.Spec.Template.Labels
	}
	if u, ok := byName(r.objs, "Service")[r.webhookService]; ok {
		checkSelects(t, "Service "+r.webhookService, service(t, u).Spec.Selector, managerPods, authPods)
	} else {
		t.Errorf("the webhooks call Service %s, which is not rendered", r.webhookService)
	}
	metrics := 0
	for _, u := range byKind(r.objs, "Service") {
		if s := service(t, u); len(s.Spec.Ports) == 1 && s.Spec.Ports[0].Port == 8443 {
			metrics++
			checkSelects(t, "metrics Service "+s.Name, s.Spec.Selector, managerPods, nil)
			if authPods != nil && !labels.SelectorFromSet(s.Spec.Selector).Matches(authPods) {
				t.Errorf("metrics Service %s does not reach the auth-only pods", s.Name)
			}
		}
	}
	if metrics != 1 {
		t.Errorf("want one metrics Service (8443), got %d", metrics)
	}
	r.checkMonitoring(t)
}

// checkMonitoring: with monitoring on, one ServiceMonitor that keeps the
// metrics' own labels (a key's namespace), one PrometheusRule, and one
// dashboard ConfigMap for Grafana's sidecar holding valid JSON; with it
// off, none of them.
func (r *rendering) checkMonitoring(t *testing.T) {
	want := 0
	if r.monitoring {
		want = 1
	}
	monitors, rules := byKind(r.objs, "ServiceMonitor"), byKind(r.objs, "PrometheusRule")
	var dashboards []*unstructured.Unstructured
	for _, u := range byKind(r.objs, "ConfigMap") {
		if u.GetLabels()["grafana_dashboard"] == "1" {
			dashboards = append(dashboards, u)
		}
	}
	counts := map[string]int{"ServiceMonitor": len(monitors), "PrometheusRule": len(rules), "dashboard ConfigMap": len(dashboards)}
	for kind, got := range counts {
		if got != want {
			t.Errorf("%d %ss, want %d", got, kind, want)
		}
	}
	for _, m := range monitors {
		endpoints, _, _ := unstructured.NestedSlice(m.Object, "spec", "endpoints")
		for _, e := range endpoints {
			endpoint := e.(map[string]any)
			if honor, _ := endpoint["honorLabels"].(bool); !honor {
				t.Errorf("ServiceMonitor %s: an endpoint without honorLabels moves a key's namespace label to exported_namespace", m.GetName())
			}
			r.checkScrapeAuth(t, m.GetName(), endpoint)
		}
	}
	for _, d := range dashboards {
		data, _, _ := unstructured.NestedStringMap(d.Object, "data")
		if !json.Valid([]byte(data["apikey-operator.json"])) {
			t.Errorf("ConfigMap %s does not hold the dashboard as valid JSON", d.GetName())
		}
	}
}

// checkCertManager: the Certificate fills the mounted Secret, comes from a
// rendered Issuer and names every Service that serves 9443.
func (r *rendering) checkCertManager(t *testing.T) {
	for _, d := range r.servers() {
		if mode := flagValue(d.Spec.Template.Spec.Containers[0].Args, "--cert-mode"); mode != "" && mode != "cert-manager" {
			t.Errorf("Deployment %s passes --cert-mode=%s with cert-manager", d.Name, mode)
		}
	}
	cert := r.certificate(t)
	if got, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName"); got != r.certSecret {
		t.Errorf("the Certificate fills Secret %s, the pods mount %s", got, r.certSecret)
	}
	r.checkStableCA(t, cert)
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	services := []string{r.webhookService}
	if r.auth != nil {
		if svc := r.serviceEndingIn(t, "-auth-server"); svc != nil {
			services = append(services, svc.Name)
		}
	}
	for _, s := range services {
		for _, dns := range []string{s + "." + r.namespace + ".svc", s + "." + r.namespace + ".svc.cluster.local"} {
			if !slices.Contains(dnsNames, dns) {
				t.Errorf("the Certificate does not name %s (has %v)", dns, dnsNames)
			}
		}
	}
}

// checkSelfSigned: nothing of cert-manager; every pod runs self-signed for
// the webhook Service; the manager may keep the Secret
// and inject exactly its own webhook configurations; the auth-only pods may
// read the Secret and do nothing else with it.
func (r *rendering) checkSelfSigned(t *testing.T) {
	for _, u := range r.objs {
		if u.GroupVersionKind().Group == "cert-manager.io" {
			t.Errorf("self-signed, yet %s %s is rendered", u.GetKind(), key(u))
		}
	}
	for _, d := range r.servers() {
		args := d.Spec.Template.Spec.Containers[0].Args
		for _, want := range []string{"--cert-mode=self-signed", "--webhook-service=" + r.webhookService} {
			if !slices.Contains(args, want) {
				t.Errorf("Deployment %s does not pass %s (args %v)", d.Name, want, args)
			}
		}
	}
	manager := r.serviceAccount(r.manager)
	if !r.allows(t, manager, "Role", "secrets", "", "create") {
		t.Error("no Role bound to the manager lets it create Secrets in its namespace")
	}
	if !r.allows(t, manager, "Role", "secrets", r.certSecret, "get", "list", "watch", "delete") {
		t.Errorf("no Role bound to the manager lets it get, watch and delete Secret %s", r.certSecret)
	}
	for kind, resource := range map[string]string{
		"MutatingWebhookConfiguration":   "mutatingwebhookconfigurations",
		"ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
	} {
		for name := range byName(r.objs, kind) {
			if !r.allows(t, manager, "ClusterRole", resource, name, "get", "list", "watch", "patch") {
				t.Errorf("no ClusterRole bound to the manager lets it watch and patch %s %s", kind, name)
			}
		}
	}
	if r.auth == nil {
		return
	}
	auth := r.serviceAccount(r.auth)
	if !r.allows(t, auth, "Role", "secrets", r.certSecret, "get", "list", "watch") {
		t.Errorf("no Role bound to the auth-only pods lets them watch Secret %s", r.certSecret)
	}
	if r.allows(t, auth, "Role", "secrets", r.certSecret, "delete") || r.allows(t, auth, "Role", "secrets", "", "create") {
		t.Errorf("the auth-only pods may create or delete Secret %s", r.certSecret)
	}
}

func (r *rendering) serviceAccount(d *appsv1.Deployment) rbacv1.Subject {
	return rbacv1.Subject{Kind: "ServiceAccount", Name: d.Spec.Template.Spec.ServiceAccountName, Namespace: r.namespace}
}

// allows reports whether the roles of kind roleKind bound to subject grant every verb on
// resource named name ("" asks for a grant not limited by name).
func (r *rendering) allows(t *testing.T, subject rbacv1.Subject, roleKind, resource, name string, verbs ...string) bool {
	t.Helper()
	var rules []rbacv1.PolicyRule
	for roleName, u := range byName(r.objs, roleKind) {
		if r.bound(t, roleKind, roleName, subject) {
			role := &rbacv1.ClusterRole{} // a Role's rules read the same
			convert(t, u, role)
			rules = append(rules, role.Rules...)
		}
	}
	return !slices.ContainsFunc(verbs, func(verb string) bool {
		return !slices.ContainsFunc(rules, func(rule rbacv1.PolicyRule) bool {
			return slices.Contains(rule.Resources, resource) && slices.Contains(rule.Verbs, verb) &&
				(len(rule.ResourceNames) == 0 || name != "" && slices.Contains(rule.ResourceNames, name))
		})
	})
}

// bound reports whether a RoleBinding or ClusterRoleBinding grants the role
// to subject.
func (r *rendering) bound(t *testing.T, roleKind, role string, subject rbacv1.Subject) bool {
	t.Helper()
	for _, u := range append(byKind(r.objs, "RoleBinding"), byKind(r.objs, "ClusterRoleBinding")...) {
		b := &rbacv1.RoleBinding{} // a ClusterRoleBinding reads the same
		convert(t, u, b)
		if b.RoleRef.Kind == roleKind && b.RoleRef.Name == role && slices.Contains(b.Subjects, subject) {
			return true
		}
	}
	return false
}

// serviceEndingIn returns the one Service whose name ends in suffix.
func (r *rendering) serviceEndingIn(t *testing.T, suffix string) *corev1.Service {
	t.Helper()
	var found *corev1.Service
	for name, u := range byName(r.objs, "Service") {
		if strings.HasSuffix(name, suffix) {
			if found != nil {
				t.Errorf("two Services end in %s", suffix)
			}
			found = service(t, u)
		}
	}
	if found == nil {
		t.Errorf("no Service ends in %s", suffix)
	}
	return found
}

// certificate is the serving certificate: the one cert-manager Certificate
// that is not a CA and names the webhook Service.
func (r *rendering) certificate(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	var serving []*unstructured.Unstructured
	for _, c := range byKind(r.objs, "Certificate") {
		isCA, _, _ := unstructured.NestedBool(c.Object, "spec", "isCA")
		dnsNames, _, _ := unstructured.NestedStringSlice(c.Object, "spec", "dnsNames")
		if !isCA && slices.ContainsFunc(dnsNames, func(dns string) bool { return strings.HasPrefix(dns, r.webhookService+".") }) {
			serving = append(serving, c)
		}
	}
	if len(serving) != 1 {
		t.Fatalf("want one serving Certificate, got %d", len(serving))
	}
	return serving[0]
}

// checkStableCA: the serving certificate comes from a CA Issuer whose CA is
// a Certificate of its own, issued by a rendered self-signed Issuer and
// keeping its key when renewed, so that renewals never change the ca.crt
// that kube-apiserver and the proxies trust.
func (r *rendering) checkStableCA(t *testing.T, serving *unstructured.Unstructured) {
	t.Helper()
	issuers := byName(r.objs, "Issuer")
	name, _, _ := unstructured.NestedString(serving.Object, "spec", "issuerRef", "name")
	caSecret, _, _ := unstructured.NestedString(issuers[name].Object, "spec", "ca", "secretName")
	if issuers[name] == nil || caSecret == "" {
		t.Fatalf("the serving Certificate's Issuer %s is not a rendered CA Issuer: renewals would change the CA", name)
	}
	var ca *unstructured.Unstructured
	for _, c := range byKind(r.objs, "Certificate") {
		if secret, _, _ := unstructured.NestedString(c.Object, "spec", "secretName"); secret == caSecret {
			ca = c
		}
	}
	if ca == nil {
		t.Fatalf("no Certificate fills the CA Issuer's Secret %s", caSecret)
	}
	if isCA, _, _ := unstructured.NestedBool(ca.Object, "spec", "isCA"); !isCA {
		t.Errorf("Certificate %s fills the CA Secret but is not isCA", ca.GetName())
	}
	if policy, _, _ := unstructured.NestedString(ca.Object, "spec", "privateKey", "rotationPolicy"); policy != "Never" {
		t.Errorf("the CA Certificate's key rotationPolicy is %q: a CA renewal would change the trust anchor", policy)
	}
	root, _, _ := unstructured.NestedString(ca.Object, "spec", "issuerRef", "name")
	if _, selfSigned, _ := unstructured.NestedMap(issuers[root].Object, "spec", "selfSigned"); issuers[root] == nil || !selfSigned {
		t.Errorf("the CA Certificate's Issuer %s is not a rendered self-signed Issuer", root)
	}
}

// checkSelects: selector picks the pods labelled want and none labelled notWant.
func checkSelects(t *testing.T, what string, selector map[string]string, want, notWant labels.Set) {
	t.Helper()
	if len(selector) == 0 {
		t.Errorf("%s selects every pod", what)
		return
	}
	s := labels.SelectorFromSet(selector)
	if !s.Matches(want) {
		t.Errorf("%s (selector %v) misses pods %v", what, selector, want)
	}
	if notWant != nil && s.Matches(notWant) {
		t.Errorf("%s (selector %v) also picks pods %v", what, selector, notWant)
	}
}

// flagValue is the value args give flag (--flag=value), or "".
func flagValue(args []string, flag string) string {
	for _, arg := range args {
		if v, ok := strings.CutPrefix(arg, flag+"="); ok {
			return v
		}
	}
	return ""
}

func flagFor(kind string) string {
	if kind == "MutatingWebhookConfiguration" {
		return "--mutating-webhook-configuration"
	}
	return "--validating-webhook-configuration"
}
