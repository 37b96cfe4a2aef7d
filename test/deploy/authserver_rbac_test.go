package deploy

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// TestAuthServerWritesNothingIssuanceReads holds the auth-only Deployment to
// least privilege (docs/security.md) in every rendering that ships it: whatever any
// binding grants its ServiceAccount, it may write no object the controller
// decides issuance from (ApiKeys, their status and finalizers, records,
// Secrets), read no Secret but the webhook serving certificate's, and its
// one write in apikeys.dev is patching ApiKeyRecord status (last-used times).
func TestAuthServerWritesNothingIssuanceReads(t *testing.T) {
	// Every variant with an auth-only Deployment, and the chart with only that on.
	cases := []variant{{
		name: "helm authServer.enabled=true", namespace: "helm-auth",
		render:     func(t *testing.T) []byte { return helmTemplate(t, "helm-auth", "--set", "authServer.enabled=true") },
		authServer: true,
	}}
	for _, v := range variants() {
		if v.authServer {
			cases = append(cases, v)
		}
	}
	for _, v := range cases {
		t.Run(v.name, func(t *testing.T) {
			r := newRendering(t, v)
			sa := r.serviceAccount(r.auth)
			rules := r.rulesBoundTo(t, sa)
			if len(rules) == 0 {
				t.Fatalf("no rule is bound to ServiceAccount %s/%s", sa.Namespace, sa.Name)
			}
			checkAuthServerRules(t, rules, certSecretOf(r.auth))
		})
	}
}

// Verbs that change an object; "*" is every verb.
var writeVerbs = []string{"create", "update", "patch", "delete", "deletecollection", "*"}

// Verbs that read an object, or a list of them.
var readVerbs = []string{"get", "list", "watch", "*"}

// issuanceInputs are what the controller reads when it decides which token
// hashes are live: the auth server must not write any of them.
var issuanceInputs = []groupResource{
	{"apikeys.dev", "apikeys"},
	{"apikeys.dev", "apikeys/status"},
	{"apikeys.dev", "apikeys/finalizers"},
	{"apikeys.dev", "apikeyrecords"},
	{"", "secrets"},
}

type groupResource struct{ group, resource string }

// checkAuthServerRules applies the auth server's limits to the rules its
// ServiceAccount holds; certSecret is the one Secret it may read.
func checkAuthServerRules(t reporter, rules []rbacv1.PolicyRule, certSecret string) {
	t.Helper()
	for _, rule := range rules {
		checkAuthServerRule(t, rule, certSecret)
	}
	if !slices.ContainsFunc(rules, func(rule rbacv1.PolicyRule) bool {
		return covers(rule, "apikeys.dev", "apikeyrecords/status") && slices.Contains(rule.Verbs, "patch")
	}) {
		t.Errorf("the auth server may not patch apikeyrecords/status: the usage flusher cannot record last use")
	}
}

// checkAuthServerRule applies the auth server's limits to one of its rules.
func checkAuthServerRule(t reporter, rule rbacv1.PolicyRule, certSecret string) {
	t.Helper()
	for _, in := range issuanceInputs {
		if covers(rule, in.group, in.resource) && hasAny(rule.Verbs, writeVerbs) {
			t.Errorf("the auth server may %v %s (rule %+v)", rule.Verbs, in.resource, rule)
		}
	}
	if covers(rule, "", "secrets") && hasAny(rule.Verbs, readVerbs) &&
		(certSecret == "" || len(rule.ResourceNames) == 0 ||
			slices.ContainsFunc(rule.ResourceNames, func(name string) bool { return name != certSecret })) {
		t.Errorf("the auth server may %v Secrets other than the serving certificate's %q (rule %+v)", rule.Verbs, certSecret, rule)
	}
	if coversGroup(rule, "apikeys.dev") && hasAny(rule.Verbs, writeVerbs) &&
		(!slices.Equal(rule.Resources, []string{"apikeyrecords/status"}) ||
			slices.ContainsFunc(rule.Verbs, func(verb string) bool { return verb != "patch" && slices.Contains(writeVerbs, verb) })) {
		t.Errorf("the auth server's writes in apikeys.dev go beyond patching apikeyrecords/status (rule %+v)", rule)
	}
}

// rulesBoundTo returns every rule a RoleBinding or ClusterRoleBinding in the
// rendering grants sa, directly or through a group it belongs to. A binding
// to a role the rendering does not hold, or to an aggregated ClusterRole,
// fails the test: its rules cannot be read from here.
func (r *rendering) rulesBoundTo(t *testing.T, sa rbacv1.Subject) []rbacv1.PolicyRule {
	t.Helper()
	var rules []rbacv1.PolicyRule
	for _, u := range append(byKind(r.objs, "RoleBinding"), byKind(r.objs, "ClusterRoleBinding")...) {
		b := &rbacv1.RoleBinding{} // a ClusterRoleBinding reads the same
		convert(t, u, b)
		if !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return appliesTo(s, b.Namespace, sa) }) {
			continue
		}
		role, ok := byName(r.objs, b.RoleRef.Kind)[b.RoleRef.Name]
		if !ok || b.RoleRef.Kind == "Role" && role.GetNamespace() != b.Namespace {
			t.Errorf("%s %s binds the auth server to %s %s, which is not rendered", u.GetKind(), key(u), b.RoleRef.Kind, b.RoleRef.Name)
			continue
		}
		cr := &rbacv1.ClusterRole{} // a Role's rules read the same
		convert(t, role, cr)
		if cr.AggregationRule != nil {
			t.Errorf("%s %s binds the auth server to aggregated ClusterRole %s, whose rules are only known in a cluster",
				u.GetKind(), key(u), cr.Name)
		}
		rules = append(rules, cr.Rules...)
	}
	return rules
}

// appliesTo reports whether binding subject s (of a binding in namespace
// bindingNS; "" for a ClusterRoleBinding) names service account sa, by
// itself, by its user name or by a group every service account is in.
func appliesTo(s rbacv1.Subject, bindingNS string, sa rbacv1.Subject) bool {
	switch s.Kind {
	case rbacv1.ServiceAccountKind:
		ns := s.Namespace
		if ns == "" {
			ns = bindingNS
		}
		return s.Name == sa.Name && ns == sa.Namespace
	case rbacv1.UserKind:
		return s.Name == "system:serviceaccount:"+sa.Namespace+":"+sa.Name
	case rbacv1.GroupKind:
		return s.Name == "system:authenticated" || s.Name == "system:serviceaccounts" ||
			s.Name == "system:serviceaccounts:"+sa.Namespace
	}
	return false
}

// coversGroup reports whether rule applies to API group group.
func coversGroup(rule rbacv1.PolicyRule, group string) bool {
	return slices.Contains(rule.APIGroups, group) || slices.Contains(rule.APIGroups, rbacv1.APIGroupAll)
}

// covers reports whether rule applies to resource (with its subresource,
// "apikeys/status") of group, as the RBAC authorizer matches them: by name,
// "*", or "*/<subresource>".
func covers(rule rbacv1.PolicyRule, group, resource string) bool {
	if !coversGroup(rule, group) {
		return false
	}
	_, sub, hasSub := strings.Cut(resource, "/")
	return slices.ContainsFunc(rule.Resources, func(res string) bool {
		return res == resource || res == rbacv1.ResourceAll || hasSub && res == "*/"+sub
	})
}

// hasAny reports whether verbs holds any of want.
func hasAny(verbs, want []string) bool {
	return slices.ContainsFunc(verbs, func(v string) bool { return slices.Contains(want, v) })
}

// certSecretOf is the Secret d's serving certificate comes from: the one it
// keeps itself (self-signed) or the one it mounts; "" if neither.
func certSecretOf(d *appsv1.Deployment) string {
	if name := flagValue(d.Spec.Template.Spec.Containers[0].Args, "--webhook-cert-secret"); name != "" {
		return name
	}
	if _, source := certVolume(d); source != nil && source.Secret != nil {
		return source.Secret.SecretName
	}
	return ""
}

// TestAuthServerRuleChecks feeds the checks rules that break each limit, so
// a check that cannot fail does not pass the renderings unnoticed.
func TestAuthServerRuleChecks(t *testing.T) {
	const cert = "webhook-server-cert"
	rule := func(group, resource string, names []string, verbs ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, ResourceNames: names, Verbs: verbs}
	}
	allowed := []rbacv1.PolicyRule{
		rule("apikeys.dev", "apikeys", nil, "get", "list", "watch"),
		rule("apikeys.dev", "apikeyrecords", nil, "get", "list", "watch"),
		rule("apikeys.dev", "apikeyrecords/status", nil, "get", "patch"),
		rule("", "secrets", []string{cert}, "get", "list", "watch"),
		rule("authentication.k8s.io", "tokenreviews", nil, "create"),
	}
	if fails(allowed, cert) {
		t.Error("the checks refuse the rules the auth server needs")
	}
	if !fails(allowed[:2], cert) {
		t.Error("the checks pass an auth server that cannot patch apikeyrecords/status")
	}
	for name, bad := range map[string]rbacv1.PolicyRule{
		"patch apikeys/status":      rule("apikeys.dev", "apikeys/status", nil, "get", "patch"),
		"update apikeys/finalizers": rule("apikeys.dev", "apikeys/finalizers", nil, "update"),
		"create records":            rule("apikeys.dev", "apikeyrecords", nil, "create"),
		"every verb in apikeys.dev": rule("apikeys.dev", "*", nil, "*"),
		"any group's status":        rule("*", "*/status", nil, "patch"),
		"update record status":      rule("apikeys.dev", "apikeyrecords/status", nil, "update"),
		"delete the cert Secret":    rule("", "secrets", []string{cert}, "delete"),
		"read every Secret":         rule("", "secrets", nil, "get"),
		"read another Secret":       rule("", "secrets", []string{cert, "tenant-token"}, "watch"),
		"read Secrets of any group": rule("*", "*", nil, "list"),
	} {
		if !fails(append(slices.Clone(allowed), bad), cert) {
			t.Errorf("the checks pass a rule that lets the auth server %s", name)
		}
	}
}

// reporter is the part of testing.T the rule checks report through.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// failRecorder is a reporter that only remembers whether a check failed.
type failRecorder struct{ failed bool }

func (r *failRecorder) Helper()               {}
func (r *failRecorder) Errorf(string, ...any) { r.failed = true }

// fails reports whether the auth server's rule checks refuse rules.
func fails(rules []rbacv1.PolicyRule, certSecret string) bool {
	rec := &failRecorder{}
	checkAuthServerRules(rec, rules, certSecret)
	return rec.failed
}
