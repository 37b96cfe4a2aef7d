package docs

import (
	"encoding/json"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// authServerReads is what an auth server must be allowed to read and write to
// answer at all: the informers behind its index (it reports ready only once
// each has listed) and the last-used flush. config/auth-server/role.yaml
// grants it; a guide that runs the auth server under a role of its own must
// too, or every token is refused.
var authServerReads = []struct{ group, resource, verb string }{
	{"", "namespaces", "get"}, {"", "namespaces", "list"}, {"", "namespaces", "watch"},
	{"apikeys.dev", "apikeys", "get"}, {"apikeys.dev", "apikeys", "list"}, {"apikeys.dev", "apikeys", "watch"},
	{"apikeys.dev", "apikeyrecords", "get"}, {"apikeys.dev", "apikeyrecords", "list"}, {"apikeys.dev", "apikeyrecords", "watch"},
	{"apikeys.dev", "apikeyrecords/status", "patch"},
}

func TestAuthServerRolesInTheDocsLetItAnswer(t *testing.T) {
	found := 0
	for _, page := range markdownPages(t) {
		for _, b := range yamlBlocks(t, page) {
			for _, doc := range b.documents(t) {
				if doc["kind"] != "ClusterRole" {
					continue
				}
				raw, err := json.Marshal(doc)
				if err != nil {
					t.Fatal(err)
				}
				var role rbacv1.ClusterRole
				if err := json.Unmarshal(raw, &role); err != nil {
					t.Fatalf("%s: %v", b, err)
				}
				if !strings.Contains(role.Name, "auth-server") {
					continue
				}
				found++
				for _, want := range authServerReads {
					if !grants(role.Rules, want.group, want.resource, want.verb) {
						t.Errorf("%s: ClusterRole %s does not grant %s on %s (API group %q), which the auth server needs to answer",
							b, role.Name, want.verb, want.resource, want.group)
					}
				}
			}
		}
	}
	if found == 0 {
		t.Fatal("no auth-server ClusterRole in the docs: the test checks nothing")
	}
}

func grants(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if has(r.APIGroups, group) && has(r.Resources, resource) && has(r.Verbs, verb) {
			return true
		}
	}
	return false
}

func has(list []string, s string) bool {
	for _, v := range list {
		if v == s || v == "*" {
			return true
		}
	}
	return false
}
