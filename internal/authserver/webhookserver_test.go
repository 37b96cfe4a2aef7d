package authserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/apikey-operator/apikey-operator/test/utils"
)

// TestWebhookServer serves the auth endpoints and an admission webhook on
// one TLS port, as the manager does: forward-auth answers paths that are not
// clean as sent, the other endpoints answer as on Handler, and every other
// path still goes through the webhook server's ServeMux.
func TestWebhookServer(t *testing.T) {
	f := newAuthFixture(t)
	base, pool := startWebhookServer(t, f, 0, func(ws *WebhookServer) {
		ws.Register("/validate-apikeys-dev-v1alpha1-apikey", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusTeapot)
		}))
	})
	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	send := func(method, path, body string, headers ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		answer, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		assertNoSecrets(t, resp.Header, string(answer), f.secrets)
		return resp
	}

	for _, path := range []string{"/auth", "/auth/", "/auth//x", "/auth/./x", "/auth/a/../b?c=d", "/auth/../verify"} {
		if resp := send(http.MethodGet, path, "", "Authorization", "Bearer "+f.token); resp.StatusCode != http.StatusOK ||
			resp.Header.Get(HeaderUser) != fixtureUsername {
			t.Errorf("GET %s with the token: %d, user %q", path, resp.StatusCode, resp.Header.Get(HeaderUser))
		}
		if resp := send(http.MethodGet, path, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", path, resp.StatusCode)
		}
	}
	for _, tt := range []struct {
		method, path, body string
		want               func(status int) bool
		what               string
	}{
		{http.MethodPost, "/tokenreview", tokenReviewBody("authentication.k8s.io/v1", f.token), is(http.StatusOK), "200"},
		{http.MethodPost, "/verify", verifyBody(f.token, nil, ""), is(http.StatusOK), "200"},
		{http.MethodPost, "/validate-apikeys-dev-v1alpha1-apikey", "{}", is(http.StatusTeapot), "the webhook's own 418"},
		{http.MethodPost, "/x/../validate-apikeys-dev-v1alpha1-apikey", "{}", func(s int) bool { return s/100 == 3 }, "the ServeMux's redirect"},
		{http.MethodGet, "/metrics", "", is(http.StatusNotFound), "404"},
	} {
		if resp := send(tt.method, tt.path, tt.body); !tt.want(resp.StatusCode) {
			t.Errorf("%s %s: %d, want %s", tt.method, tt.path, resp.StatusCode, tt.what)
		}
	}
}

// startWebhookServer starts f's server as the manager's webhook server on
// a loopback port, HTTP/1.1 only, with readTimeout if it is not 0 and after
// setup, until t ends. It returns the server's URL and its CA.
func startWebhookServer(t *testing.T, f *authFixture, readTimeout time.Duration, setup func(*WebhookServer)) (string, *x509.CertPool) {
	t.Helper()
	return startServer(t, f.server.WebhookServer, readTimeout, setup)
}

// startServer is startWebhookServer for the server build makes.
func startServer(t *testing.T, build func(webhook.Options) *WebhookServer, readTimeout time.Duration,
	setup func(*WebhookServer)) (string, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	caPEM, err := utils.WriteServingCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	port, err := utils.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ws := build(webhook.Options{
		Host: "127.0.0.1", Port: port, CertDir: dir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	})
	ws.readTimeout = readTimeout
	if setup != nil {
		setup(ws)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- ws.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	waitStarted(t, ws)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return fmt.Sprintf("https://127.0.0.1:%d", port), pool
}

// TestWebhookServerCutsSlowClients mounts the slow-body attack: a client
// that sends a request's headers and part of its body, or part of its
// headers, and then nothing, must not hold its connection (and the
// buffer the server reads the body into) beyond the read timeout.
func TestWebhookServerCutsSlowClients(t *testing.T) {
	f := newAuthFixture(t)
	for what, build := range map[string]func(webhook.Options) *WebhookServer{
		"with the auth endpoints": f.server.WebhookServer,
		"admission only":          AdmissionServer,
	} {
		t.Run(what, func(t *testing.T) { cutsSlowClients(t, build) })
	}
}

func cutsSlowClients(t *testing.T, build func(webhook.Options) *WebhookServer) {
	const readTimeout = 300 * time.Millisecond
	base, pool := startServer(t, build, readTimeout, func(ws *WebhookServer) {
		// As controller-runtime's admission handler does, read it all.
		ws.Register("/validate-apikeys-dev-v1alpha1-apikey", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.ReadAll(r.Body); err != nil {
				w.WriteHeader(http.StatusBadRequest)
			}
		}))
	})
	addr := strings.TrimPrefix(base, "https://")
	for _, tt := range []struct{ what, sent string }{
		{"a body cut short", "POST /verify HTTP/1.1\r\nHost: auth\r\nContent-Type: application/json\r\n" +
			"Content-Length: 60000\r\n\r\n{\"token\": \"" + strings.Repeat("a", 30000)},
		{"an admission review cut short", "POST /validate-apikeys-dev-v1alpha1-apikey HTTP/1.1\r\nHost: auth\r\n" +
			"Content-Length: 7000000\r\n\r\n{\"kind\": \"AdmissionReview\""},
		{"headers cut short", "GET /auth HTTP/1.1\r\nHost: auth\r\nX-Padding: " + strings.Repeat("p", 1000)},
	} {
		t.Run(tt.what, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			if _, err := io.WriteString(conn, tt.sent); err != nil {
				t.Fatal(err)
			}
			// The server must close the connection; the client waits far
			// longer than the timeout before it gives up.
			start := time.Now()
			if err := conn.SetReadDeadline(start.Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(io.Discard, conn)
			var netErr net.Error
			if errors.As(err, &netErr) && netErr.Timeout() {
				t.Fatalf("the server still held the connection after %s (read timeout %s)", time.Since(start).Round(time.Millisecond), readTimeout)
			}
		})
	}
}

// TestWebhookServerCutsClientsThatStopReading mounts the slow-read attack:
// a client that pipelines requests and never reads the answers must not
// hold its connection, once TCP's buffers fill and the server's writes
// stall, beyond the write timeout.
func TestWebhookServerCutsClientsThatStopReading(t *testing.T) {
	const writeTimeout = 500 * time.Millisecond
	f := newAuthFixture(t)
	base, pool := startWebhookServer(t, f, 0, func(ws *WebhookServer) { ws.writeTimeout = writeTimeout })
	for _, path := range []string{"/auth", "/validate-apikeys-dev-v1alpha1-apikey"} {
		t.Run(path, func(t *testing.T) {
			conn, stopped, err := utils.StopReading(strings.TrimPrefix(base, "https://"),
				&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
				"GET "+path+" HTTP/1.1\r\nHost: auth\r\n\r\n")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			start := time.Now()
			if held, err := utils.PeerEstablished(conn); err != nil || !held {
				t.Fatalf("the server's side of the connection is not in /proc/net/tcp as established: %v", err)
			}
			// The stalled write times out, then TLS's close_notify waits
			// up to 5 s more on the full buffer before the socket closes.
			err = wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, writeTimeout+5*time.Second+10*time.Second, true,
				func(context.Context) (bool, error) {
					held, err := utils.PeerEstablished(conn)
					return !held, err
				})
			if err != nil {
				t.Fatalf("the server still held the connection after %s (write timeout %s): %v",
					time.Since(start).Round(time.Millisecond), writeTimeout, err)
			}
			if held := time.Since(start); held < writeTimeout {
				t.Fatalf("the server closed the connection after %s, before its write timeout (%s): not the timeout's doing",
					held.Round(time.Millisecond), writeTimeout)
			}
			<-stopped
		})
	}
}

func is(want int) func(int) bool { return func(got int) bool { return got == want } }

// waitStarted polls ws's started check until it passes.
func waitStarted(t *testing.T, ws *WebhookServer) {
	t.Helper()
	check := ws.StartedChecker()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		err := check(nil)
		if err == nil {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the webhook server did not start: %v", err)
		}
	}
}
