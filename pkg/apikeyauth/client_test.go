package apikeyauth

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// The tests of the client against the real auth server are in the
// operator's module, test/apikeyauth: this module imports nothing of it.

func TestNewRejectsBadConfig(t *testing.T) {
	noPEM := writeFile(t, "empty.crt", "not a certificate")
	trusted := []string{"team-orders"}
	tests := []struct {
		name string
		cfg  Config
		want string // in the error: each config fails for its own reason
	}{
		{name: "no URL", cfg: Config{Namespaces: trusted}, want: "not an https URL"},
		{name: "plain http", cfg: Config{URL: "http://auth.example:9443", Namespaces: trusted}, want: "not an https URL"},
		{name: "no host", cfg: Config{URL: "https://", Namespaces: trusted}, want: "not an https URL"},
		{name: "CAFile and HTTPClient", cfg: Config{URL: "https://auth.example", CAFile: noPEM, HTTPClient: http.DefaultClient,
			Namespaces: trusted}, want: "not both"},
		{name: "missing CAFile", cfg: Config{URL: "https://auth.example", CAFile: "/does/not/exist.crt", Namespaces: trusted},
			want: "exist.crt"},
		{name: "CAFile without a certificate", cfg: Config{URL: "https://auth.example", CAFile: noPEM, Namespaces: trusted},
			want: "certificate"},
		{name: "negative Timeout", cfg: Config{URL: "https://auth.example", Timeout: -time.Second, Namespaces: trusted},
			want: "Timeout"},
		// A service that names no namespace would take any tenant's key
		// with the scopes it checks.
		{name: "neither Namespaces nor AnyNamespace", cfg: Config{URL: "https://auth.example"}, want: "set Namespaces"},
		{name: "Namespaces and AnyNamespace", cfg: Config{URL: "https://auth.example", Namespaces: trusted, AnyNamespace: true},
			want: "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%+v) = %v, %v; want an error about %q", tt.cfg, c, err, tt.want)
			}
		})
	}
	for _, cfg := range []Config{{URL: "https://auth.example", Namespaces: trusted}, {URL: "https://auth.example", AnyNamespace: true}} {
		if _, err := New(cfg); err != nil {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
}

// writeFile writes content into a new temporary file and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := t.TempDir() + "/" + name
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNamespacesHoldAgainstAnOlderServer answers as an auth server from
// before namespaces did: it ignores them and says valid for a key from
// another namespace. The client must still reject it.
func TestNamespacesHoldAgainstAnOlderServer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(VerifyResponse{Valid: true, Code: CodeValid, Username: "apikey:team-elsewhere:probe",
			Scopes: []string{"orders:*"}, APIKey: &KeyRef{Namespace: "team-elsewhere", Name: "probe"}})
	}))
	defer srv.Close()
	tok := signedToken("ak", "madeUpForAFakeServer")
	for namespaces, want := range map[string]error{"team-orders": ErrAudienceMismatch, "team-orders,team-elsewhere": nil, "": nil} {
		c, err := New(Config{URL: srv.URL, HTTPClient: srv.Client(), AnyNamespace: namespaces == "",
			Namespaces: strings.FieldsFunc(namespaces, func(r rune) bool { return r == ',' })})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(t.Context(), tok, "orders:write"); !errors.Is(err, want) {
			t.Errorf("Namespaces %q: Verify = %v, want %v", namespaces, err, want)
		}
	}
}
