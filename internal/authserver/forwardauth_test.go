package authserver

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// reusedWriter is a ResponseWriter that keeps its header map from one
// answer to the next (clearing it), so an allocation count of a handler
// answering into it is the handler's own.
type reusedWriter struct {
	header http.Header
	status int
}

func newReusedWriter() *reusedWriter { return &reusedWriter{header: http.Header{}} }

func (w *reusedWriter) Header() http.Header         { return w.header }
func (w *reusedWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *reusedWriter) WriteHeader(status int)      { w.status = status }

func (w *reusedWriter) reset() {
	clear(w.header)
	w.status = 0
}

// TestForwardAuthDoesNotAllocate holds every forward-auth answer to zero
// allocations of its own: routing, bounds, credentials, verification, the
// query, the identity headers or challenge, and metrics. (net/http then
// allocates the header map's storage and a snapshot of it.)
func TestForwardAuthDoesNotAllocate(t *testing.T) {
	f := newAuthFixture(t)
	handler := f.server.Handler()
	bearer := []string{"Authorization", "Bearer " + f.token}
	unknown := []string{"Authorization", "Bearer " + stableToken(apikeysv1alpha1.DefaultPrefix, "alloc-unknown")}
	for name, tt := range map[string]struct {
		target  string
		headers []string
		want    int
	}{
		"valid":                 {"/auth", bearer, http.StatusOK},
		"valid under /auth/":    {"/auth//orders/42", bearer, http.StatusOK},
		"valid X-API-Key":       {"/auth", []string{"X-API-Key", f.token}, http.StatusOK},
		"valid with a query":    {"/auth?audience=&scope=orders:read&path=/x?scope=invoices:pdf", bearer, http.StatusOK},
		"insufficient scope":    {"/auth?scope=orders:write", bearer, http.StatusForbidden},
		"conflicting audiences": {"/auth?audience=a&audience=b", bearer, http.StatusUnauthorized},
		"unknown token":         {"/auth", unknown, http.StatusUnauthorized},
		"garbage token":         {"/auth", []string{"Authorization", "Bearer hunter2"}, http.StatusUnauthorized},
		"no token":              {"/auth", nil, http.StatusUnauthorized},
		"two tokens":            {"/auth", append(bearer[:2:2], "X-API-Key", f.token), http.StatusUnauthorized},
	} {
		t.Run(name, func(t *testing.T) {
			req := authRequest(http.MethodGet, tt.target, tt.headers...)
			w := newReusedWriter()
			allocs := testing.AllocsPerRun(100, func() {
				w.reset()
				handler.ServeHTTP(w, req)
			})
			if w.status != tt.want {
				t.Fatalf("status %d, want %d", w.status, tt.want)
			}
			if allocs != 0 {
				t.Errorf("forward-auth allocates %v times per answer", allocs)
			}
		})
	}
}

// TestAuthorizeQuery checks authorizeQuery against the same decision made
// from url.ParseQuery, which it reads the query as.
func TestAuthorizeQuery(t *testing.T) {
	f := newAuthFixture(t)
	restricted := f.issue(informerKey(fixtureNamespace, "aud", "aud-uid"), "aud",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Audiences = []string{"registry", "a b"} })
	for _, tok := range []string{f.token, restricted} {
		e, code := f.index.Verify(tok, fixtureNow)
		if code != CodeValid {
			t.Fatalf("Verify = %v", code)
		}
		for _, query := range authorizeQuerySeeds {
			gotCode, gotConflict := authorizeQuery(e, query)
			wantCode, wantConflict := parsedQueryDecision(e, query)
			if gotCode != wantCode || gotConflict != wantConflict {
				t.Errorf("%s, %q: %v (conflicting %v), want %v (conflicting %v)",
					e.Name, query, gotCode, gotConflict, wantCode, wantConflict)
			}
		}
	}
}

var authorizeQuerySeeds = []string{
	"", "&", "&&scope=orders:read&", "scope=orders:read", "scope=orders:read&scope=invoices:pdf",
	"scope=orders:write", "scope=orders%3Aread", "scope=orders:read;scope=orders:write", "scope=%zz",
	"scope=orders:write&scope=%zz", "%zz=1&scope=orders:read", "scope", "scope=", "scope&audience",
	"audience=registry", "audience=registry&audience=registry", "audience=registry&audience=shop",
	"audience=&path=/x?audience=registry", "audience=a+b", "audience=a%20b", "audience=a%2",
	"audience=registry&path=/x;audience=shop", "Audience=shop", "audience=registry&scope=orders:write",
	"audience=shop&scope=orders:write", "scope=orders:write&audience=a&audience=b", "x=1&y",
}

// parsedQueryDecision is what forward-auth decided before it read the query
// itself: url.ParseQuery, differing audiences refused, then Authorize.
func parsedQueryDecision(e *Entry, query string) (Code, bool) {
	q, _ := url.ParseQuery(query)
	for _, a := range q["audience"] {
		if a != q.Get("audience") {
			return CodeAudienceMismatch, true
		}
	}
	return e.Authorize(q["scope"], q.Get("audience")), false
}

// FuzzAuthorizeQuery holds authorizeQuery to url.ParseQuery's reading of
// any query, for a key with and one without audiences.
func FuzzAuthorizeQuery(f *testing.F) {
	fx := newAuthFixture(f)
	restricted := fx.issue(informerKey(fixtureNamespace, "aud", "aud-uid"), "aud",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Audiences = []string{"registry"} })
	open, _ := fx.index.Verify(fx.token, fixtureNow)
	closed, _ := fx.index.Verify(restricted, fixtureNow)
	for _, query := range authorizeQuerySeeds {
		f.Add(query)
	}
	f.Fuzz(func(t *testing.T, query string) {
		for _, e := range []*Entry{open, closed} {
			gotCode, gotConflict := authorizeQuery(e, query)
			wantCode, wantConflict := parsedQueryDecision(e, query)
			if gotCode != wantCode || gotConflict != wantConflict {
				t.Fatalf("%s, %q: %v (conflicting %v), want %v (conflicting %v)",
					e.Name, query, gotCode, gotConflict, wantCode, wantConflict)
			}
		}
	})
}

// BenchmarkOverHTTP sends GET /auth over one loopback HTTP/1.1 keep-alive
// connection to the auth server and, beside it, to a bare handler returning
// 200, both on the webhook server's http.Server settings. allocs/op counts
// the whole process (server and a client that allocates nothing). The third
// server is the bare handler answering with the same five identity headers
// (fixed values): net/http's price for any header (the map's storage, its
// snapshot at WriteHeader, the sorted write), which forward-auth should
// match in allocations, adding only its own work in time.
func BenchmarkOverHTTP(b *testing.B) {
	fx := newAuthFixture(b)
	request := []byte("GET /auth HTTP/1.1\r\nHost: auth.test\r\nUser-Agent: bench\r\nAuthorization: Bearer " + fx.token + "\r\n\r\n")
	identity := [len(forwardHeaderNames)][]string{{"apikey:team-a:orders"}, {"apikeys:team-a"}, {"orders:read"}, {"orders"}, {"team-a"}}
	for _, server := range []struct {
		name    string
		handler http.Handler
	}{
		{"bare", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })},
		{"bare-with-headers", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			for i, name := range forwardHeaderNames {
				h[name] = identity[i]
			}
			w.WriteHeader(http.StatusOK)
		})},
		{"forward-auth", fx.server.Handler()},
	} {
		b.Run(server.name, func(b *testing.B) {
			conn, br := serveLoopback(b, server.handler)
			roundTrip := func() {
				if _, err := conn.Write(request); err != nil {
					b.Fatal(err)
				}
				if err := readStatusOK(br); err != nil {
					b.Fatal(err)
				}
			}
			roundTrip()
			b.ReportAllocs()
			cpu := processCPU(b)
			for b.Loop() {
				roundTrip()
			}
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the CPU time (user and system) this process has used. Per
// request it is a steadier measure than wall time on a shared machine: other
// tenants slow a round down but do not add to it.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serveLoopback serves h on a loopback port until tb ends and returns a
// connection to it.
func serveLoopback(tb testing.TB, h http.Handler) (net.Conn, *bufio.Reader) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := HTTPServer(context.Background(), h)
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn, bufio.NewReader(conn)
}

// readStatusOK reads a bodiless response's status line and headers without
// allocating, and fails unless the status is 200.
func readStatusOK(br *bufio.Reader) error {
	status, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	ok := bytes.HasPrefix(status, []byte("HTTP/1.1 200 "))
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
	}
	if !ok {
		return fmt.Errorf("answered %q", status)
	}
	return nil
}
