package docs

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// docsKey is a key the forward-auth checks below present.
type docsKey struct {
	name      string
	namespace string // default docsNamespace
	scopes    []string
	audiences []string
	token     string
}

// docsNamespace is the namespace the integration pages' routes trust.
const docsNamespace = "team-orders"

// docsAuthServer is a real auth server holding keys, answering in memory.
func docsAuthServer(t *testing.T, keys ...*docsKey) http.Handler {
	t.Helper()
	ix := authserver.NewIndex()
	for i, k := range keys {
		tok, err := token.Generate("ak")
		if err != nil {
			t.Fatal(err)
		}
		k.token = tok
		if k.namespace == "" {
			k.namespace = docsNamespace
		}
		uid := types.UID("00000000-0000-4000-8000-00000000000" + string(rune('0'+i)))
		ix.SetKey(&apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: k.namespace, Name: k.name, UID: uid}})
		ix.SetRecord(&apikeysv1alpha1.ApiKeyRecord{
			ObjectMeta: metav1.ObjectMeta{Name: "record-" + k.name},
			Spec: apikeysv1alpha1.ApiKeyRecordSpec{
				TokenHash: token.Hash(tok),
				TokenHint: token.Hint(tok),
				ApiKey:    apikeysv1alpha1.ApiKeyReference{Namespace: k.namespace, Name: k.name, UID: string(uid)},
				IssuedAt:  metav1.NewTime(time.Now().Add(-time.Minute)),
				Username:  "apikey:" + k.namespace + ":" + k.name,
				Groups:    []string{"apikeys", "apikeys:" + k.namespace},
				Scopes:    k.scopes,
				Audiences: k.audiences,
			},
		})
	}
	ix.MarkSynced()
	return authserver.NewServer(ix, authserver.Options{}).Handler()
}

// check sends a forward-auth subrequest for path (with its query) carrying
// tok, plus a forged identity header, and returns the answer.
func check(h http.Handler, path, tok string) *http.Response {
	req := httptest.NewRequest(http.MethodGet, "https://auth.test"+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Auth-Request-User", "admin")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

// TestForwardAuthURLsInTheDocs sends the auth URLs the integration pages
// configure through a real auth server: what a URL requires is what the
// page says, and what Envoy and Istio append cannot loosen it.
func TestForwardAuthURLsInTheDocs(t *testing.T) {
	var (
		anyScope = &docsKey{name: "any-scope", scopes: []string{"*"}}
		noScope  = &docsKey{name: "no-scope"}
		registry = &docsKey{name: "registry-only", scopes: []string{"*"}, audiences: []string{"registry"}}
		// A key another tenant minted with every scope: a route that
		// checks scopes must pin the namespaces it trusts (README.md).
		outsider = &docsKey{name: "outsider", namespace: "team-elsewhere", scopes: []string{"*"}}
	)
	h := docsAuthServer(t, anyScope, noScope, registry, outsider)

	// Every auth URL a proxy calls as written: Traefik's address and
	// ingress-nginx's auth-url.
	fixed := configuredAuthURLs(t, "address", "nginx.ingress.kubernetes.io/auth-url")
	for _, raw := range fixed {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		path := u.RequestURI()
		t.Run("fixed "+path, func(t *testing.T) {
			q := u.Query()
			wantAnswer(t, h, path, anyScope, http.StatusOK)
			if len(q["scope"]) > 0 {
				wantAnswer(t, h, path, noScope, http.StatusForbidden)
			} else {
				wantAnswer(t, h, path, noScope, http.StatusOK)
			}
			wantAnswer(t, h, path, registry, http.StatusUnauthorized)
			if pinned(t, path, q) {
				wantAnswer(t, h, path, outsider, http.StatusUnauthorized)
			}
		})
	}

	// Envoy and Istio append the client's path and query to the prefix.
	prefixes := configuredAuthURLs(t, "pathPrefix", "path_prefix")
	for _, prefix := range prefixes {
		t.Run("prefix "+prefix, func(t *testing.T) {
			if !strings.HasSuffix(prefix, "&path=") || !strings.Contains(prefix, "audience=") {
				t.Fatalf("prefix %q does not pin the audience and end in &path=, as istio-envoy.md says every prefix must", prefix)
			}
			q, _ := url.ParseQuery(prefix[strings.IndexByte(prefix, '?')+1:])
			wantAnswer(t, h, prefix+"/orders/7", anyScope, http.StatusOK)
			// The client names another audience, and drops nothing.
			wantAnswer(t, h, prefix+"/orders/7?audience=registry", registry, http.StatusUnauthorized)
			wantAnswer(t, h, prefix+"/orders/7?x=1&audience=registry&scope=", registry, http.StatusUnauthorized)
			if len(q["scope"]) > 0 {
				wantAnswer(t, h, prefix+"/orders/7", noScope, http.StatusForbidden)
			}
			// The client can add a requirement, which only refuses more. (Its
			// first query parameter ends up inside path=; the rest are parsed.)
			wantAnswer(t, h, prefix+"/orders/7?x=1&scope=orders:admin", noScope, http.StatusForbidden)
			if pinned(t, prefix, q) {
				wantAnswer(t, h, prefix+"/orders/7", outsider, http.StatusUnauthorized)
				// Naming its own namespace too narrows the route to nothing.
				wantAnswer(t, h, prefix+"/orders/7?x=1&namespace=team-elsewhere", outsider, http.StatusUnauthorized)
				wantAnswer(t, h, prefix+"/orders/7?x=1&namespace=team-elsewhere", anyScope, http.StatusUnauthorized)
			}
		})
	}
	if len(fixed) == 0 || len(prefixes) == 0 {
		t.Errorf("found %d fixed auth URLs and %d Envoy prefixes in docs/integrations; expected both", len(fixed), len(prefixes))
	}

	// Why the prefixes are pinned: with a bare /auth, the client's query
	// picks the audience. If this starts failing, the auth server no longer
	// reads the appended query, and istio-envoy.md should say so.
	t.Run("bare /auth prefix", func(t *testing.T) {
		wantAnswer(t, h, "/auth"+"/orders/7?audience=registry", registry, http.StatusOK)
	})
}

// unpinned are the routes the pages leave open to keys of every namespace
// on purpose, saying so where they show them: Istio's mesh-wide provider,
// behind which the backend checks X-Apikey-Namespace itself.
var unpinned = map[string]bool{"/auth?audience=&path=": true}

// pinned reports whether route pins the namespaces it trusts, and fails the
// test unless it pins the one the pages trust, or is one of unpinned and
// checks no scope: any tenant can mint a key with any scopes, so a route
// that takes keys from every namespace admits every tenant.
func pinned(t *testing.T, route string, q url.Values) bool {
	t.Helper()
	if unpinned[route] {
		if len(q["scope"]) > 0 {
			t.Errorf("%s checks scopes without pinning namespaces", route)
		}
		return false
	}
	if got := q["namespace"]; len(got) != 1 || got[0] != docsNamespace {
		t.Errorf("%s: namespace= %q, want %q: every route pins the namespaces it trusts", route, got, docsNamespace)
	}
	return true
}

// wantAnswer sends a forward-auth check for path with k's token to h and
// wants status; a 200 must carry k's identity, and only k's, in the headers.
func wantAnswer(t *testing.T, h http.Handler, path string, k *docsKey, status int) {
	t.Helper()
	resp := check(h, path, k.token)
	if resp.StatusCode != status {
		t.Errorf("%s with key %s: status %d, want %d", path, k.name, resp.StatusCode, status)
		return
	}
	if status != http.StatusOK {
		return
	}
	if got := resp.Header.Values("X-Auth-Request-User"); len(got) != 1 || got[0] != "apikey:"+k.namespace+":"+k.name {
		t.Errorf("%s with key %s: X-Auth-Request-User = %q, want only the key's identity", path, k.name, got)
	}
	for _, name := range []string{"X-Auth-Request-Groups", "X-Auth-Request-Scopes", "X-Apikey-Name", "X-Apikey-Namespace"} {
		if _, ok := resp.Header[http.CanonicalHeaderKey(name)]; !ok {
			t.Errorf("%s with key %s: no %s in the answer", path, k.name, name)
		}
	}
}

// configuredAuthURLs collects, from the YAML blocks of docs/integrations,
// every string value under one of keys that names the auth server's /auth
// (Envoy's path_prefix is relative, so any value starting with /auth counts).
func configuredAuthURLs(t *testing.T, keys ...string) []string {
	t.Helper()
	wanted := map[string]bool{}
	for _, k := range keys {
		wanted[k] = true
	}
	seen := map[string]bool{}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if s, ok := child.(string); ok && wanted[k] && isAuthURL(s) && !seen[s] {
					seen[s] = true
					out = append(out, s)
				}
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	pages, err := filepath.Glob(filepath.Join(docsDir, "integrations", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, page := range pages {
		for _, block := range yamlBlocks(t, page) {
			for _, doc := range block.documents(t) {
				walk(doc)
			}
		}
	}
	return out
}

func isAuthURL(s string) bool {
	if strings.HasPrefix(s, "/auth") {
		return true
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && strings.HasPrefix(u.Path, "/auth")
}
