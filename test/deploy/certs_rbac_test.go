package deploy

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestCAKeyStaysWithTheManager: self-signed, the manager keeps its CA and
// the CA's private key in a Secret of its own (--webhook-ca-secret), apart
// from the serving Secret every pod reads. Whoever owns an auth-only pod
// must not be able to touch the CA Secret in any way: with its key they
// could mint a certificate for the webhook Service and pass for the
// authenticator. The manager must be able to keep both Secrets.
func TestCAKeyStaysWithTheManager(t *testing.T) {
	for _, v := range []variant{
		{
			name: "kustomize config/self-signed", namespace: "apikey-operator-system",
			render:     func(t *testing.T) []byte { return kustomizeBuild(t, "config/self-signed") },
			selfSigned: true, authServer: true,
		},
		{
			name: "helm tls.mode=self-signed", namespace: "helm-self-signed",
			render: func(t *testing.T) []byte {
				return helmTemplate(t, "helm-self-signed", "--set", "tls.mode=self-signed,authServer.enabled=true")
			},
			selfSigned: true, authServer: true,
		},
	} {
		t.Run(v.name, func(t *testing.T) {
			r := newRendering(t, v)
			args := container(r.manager, "manager").Args
			serving, ca := flagValue(args, "--webhook-cert-secret"), flagValue(args, "--webhook-ca-secret")
			if serving == "" || ca == "" || serving == ca {
				t.Fatalf("the manager must be told two Secrets, --webhook-cert-secret=%q and --webhook-ca-secret=%q", serving, ca)
			}
			for _, d := range r.servers() {
				if got := flagValue(d.Spec.Template.Spec.Containers[0].Args, "--webhook-ca-secret"); got != "" && got != ca {
					t.Errorf("Deployment %s passes --webhook-ca-secret=%s, the manager %s", d.Name, got, ca)
				}
			}

			manager := r.grants(t, r.serviceAccount(r.manager))
			for _, secret := range []string{serving, ca} {
				for _, verb := range []string{"get", "list", "watch", "update", "delete"} {
					if !slices.ContainsFunc(manager, allowing(verb, secret)) {
						t.Errorf("the manager may not %s Secret %s", verb, secret)
					}
				}
			}

			auth := r.grants(t, r.serviceAccount(r.auth))
			if !slices.ContainsFunc(auth, allowing("watch", serving)) {
				t.Errorf("the auth-only pods may not watch Secret %s, which they serve from", serving)
			}
			for _, verb := range []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"} {
				if i := slices.IndexFunc(auth, allowing(verb, ca)); i >= 0 {
					t.Errorf("the auth-only pods may %s the CA Secret %s: %+v", verb, ca, auth[i])
				}
			}
		})
	}
}

// grants are the rules that apply to subject in r's namespace: those of
// every Role and ClusterRole bound to it, or to a group it belongs to, by a
// RoleBinding there or a ClusterRoleBinding.
func (r *rendering) grants(t *testing.T, subject rbacv1.Subject) []rbacv1.PolicyRule {
	t.Helper()
	groups := []string{"system:authenticated", "system:serviceaccounts", "system:serviceaccounts:" + subject.Namespace}
	names := func(s rbacv1.Subject) bool {
		switch s.Kind {
		case rbacv1.ServiceAccountKind:
			return s.Name == subject.Name && s.Namespace == subject.Namespace
		case rbacv1.UserKind:
			return s.Name == "system:serviceaccount:"+subject.Namespace+":"+subject.Name
		case rbacv1.GroupKind:
			return slices.Contains(groups, s.Name)
		}
		return false
	}
	roles, clusterRoles := byName(r.objs, "Role"), byName(r.objs, "ClusterRole")
	var rules []rbacv1.PolicyRule
	for _, kind := range []string{"RoleBinding", "ClusterRoleBinding"} {
		for _, u := range byKind(r.objs, kind) {
			b := &rbacv1.RoleBinding{} // a ClusterRoleBinding reads the same
			convert(t, u, b)
			if kind == "RoleBinding" && b.Namespace != r.namespace || !slices.ContainsFunc(b.Subjects, names) {
				continue
			}
			role := roles[b.RoleRef.Name]
			if b.RoleRef.Kind == "ClusterRole" {
				role = clusterRoles[b.RoleRef.Name]
			}
			if role == nil {
				continue
			}
			if _, aggregated := role.Object["aggregationRule"]; aggregated {
				t.Errorf("%s is bound to %s, whose rules kube-apiserver aggregates: they cannot be judged here", subject.Name, key(role))
			}
			cr := &rbacv1.ClusterRole{} // a Role's rules read the same
			convert(t, role, cr)
			rules = append(rules, cr.Rules...)
		}
	}
	return rules
}

// allowing matches a rule that lets its holder do verb to the Secret named
// name, wildcards included. It errs towards allowing: a rule limited by name
// counts for create too, which RBAC would not grant.
func allowing(verb, name string) func(rbacv1.PolicyRule) bool {
	matches := func(list []string, want string) bool {
		return slices.Contains(list, want) || slices.Contains(list, rbacv1.ResourceAll)
	}
	return func(rule rbacv1.PolicyRule) bool {
		return matches(rule.APIGroups, "") && matches(rule.Resources, "secrets") && matches(rule.Verbs, verb) &&
			(len(rule.ResourceNames) == 0 || slices.Contains(rule.ResourceNames, name))
	}
}
