package apikeyauth_test

import (
	"net/http"
	"testing"

	"github.com/apikey-operator/apikey-operator/pkg/apikeyauth"
)

// BenchmarkMiddlewareCached is a request through Middleware answered from
// the cache: one SHA-256 of the token, a locked map lookup and a copy of
// the identity, plus the recorder and request of the test itself.
func BenchmarkMiddlewareCached(b *testing.B) {
	as := startAuthServer(b, true)
	k := as.issue(b, "orders", nil)
	c, err := apikeyauth.New(apikeyauth.Config{URL: as.server.URL, HTTPClient: as.server.Client(),
		Namespaces: []string{keyNamespace}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Verify(b.Context(), k.token, "orders:read"); err != nil {
		b.Fatal(err)
	}
	h := c.Middleware("orders:read")(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	header := http.Header{"Authorization": {"Bearer " + k.token}}
	b.ReportAllocs()
	for b.Loop() {
		serve(h, header)
	}
}
