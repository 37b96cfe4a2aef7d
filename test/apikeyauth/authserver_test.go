package apikeyauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/token"
	"github.com/apikey-operator/apikey-operator/pkg/apikeyauth"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// The tests run the real auth server (internal/authserver) over real TLS,
// answering from a real index filled with records for real tokens.

// fakeClock is the time of both the auth server and the client's cache, so
// tests can move past a TTL or an expiry without waiting.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testAuthServer is the auth server under test and what tests observe of it.
type testAuthServer struct {
	index  *authserver.Index
	server *httptest.Server
	caFile string
	clock  *fakeClock
	// verifies counts requests to /verify.
	verifies atomic.Int64
	// gate, when set, holds every request until it is closed.
	gate atomic.Pointer[chan struct{}]
	// errorLog is what the HTTP server logged.
	errorLog *utils.LogBuffer
}

// startAuthServer serves a fresh index over HTTPS. The index is synced
// unless synced is false.
func startAuthServer(t testing.TB, synced bool) *testAuthServer {
	t.Helper()
	as := &testAuthServer{index: authserver.NewIndex(), clock: newFakeClock(), errorLog: &utils.LogBuffer{}}
	auth := authserver.NewServer(as.index, authserver.Options{Now: as.clock.Now}).Handler()
	as.server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/verify" {
			as.verifies.Add(1)
		}
		if gate := as.gate.Load(); gate != nil {
			<-*gate
		}
		auth.ServeHTTP(w, r)
	}))
	as.server.Config.ErrorLog = log.New(as.errorLog, "", 0)
	as.server.StartTLS()
	t.Cleanup(as.server.Close)
	as.caFile = writePEM(t, "ca.crt", as.server.Certificate().Raw)
	if synced {
		as.index.MarkSynced()
	}
	return as
}

// keyNamespace is where issue puts every key; clients built by client
// trust it unless told otherwise.
const keyNamespace = "team-a"

// testKey is an issued ApiKey and its raw token.
type testKey struct {
	namespace, name string
	uid             types.UID
	token           string
}

// issue mints a token for a new ApiKey in team-a and indexes its record as
// the operator would. By default the key carries the scopes orders:read and
// billing:*; edit changes the record before it is indexed.
func (as *testAuthServer) issue(t testing.TB, name string, edit func(*apikeysv1alpha1.ApiKeyRecordSpec)) testKey {
	t.Helper()
	tok, err := token.Generate("ak")
	if err != nil {
		t.Fatal(err)
	}
	k := testKey{namespace: keyNamespace, name: name, uid: types.UID("uid-" + name), token: tok}
	as.setKey(k, false)
	spec := apikeysv1alpha1.ApiKeyRecordSpec{
		TokenHash: token.Hash(tok),
		TokenHint: token.Hint(tok),
		ApiKey:    apikeysv1alpha1.ApiKeyReference{Namespace: k.namespace, Name: k.name, UID: string(k.uid)},
		Username:  "apikey:team-a:" + name,
		UID:       string(k.uid), // as the controller writes it for identity Key
		Groups:    []string{"apikeys", "apikeys:team-a"},
		Scopes:    []string{"orders:read", "billing:*"},
		IssuedAt:  metav1.NewTime(as.clock.Now()),
	}
	if edit != nil {
		edit(&spec)
	}
	as.index.SetRecord(&apikeysv1alpha1.ApiKeyRecord{ObjectMeta: metav1.ObjectMeta{Name: "rec-" + name}, Spec: spec})
	return k
}

// setKey tells the index about k's ApiKey, as its informer would.
func (as *testAuthServer) setKey(k testKey, suspended bool) {
	as.index.SetKey(&apikeysv1alpha1.ApiKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.namespace, Name: k.name, UID: k.uid},
		Spec:       apikeysv1alpha1.ApiKeySpec{Suspended: suspended},
	})
}

// client returns a Client of the server trusting its CA, on the server's
// clock; cfg may set anything else.
func (as *testAuthServer) client(t *testing.T, cfg apikeyauth.Config) *apikeyauth.Client {
	t.Helper()
	cfg.URL = as.server.URL
	if len(cfg.Namespaces) == 0 && !cfg.AnyNamespace {
		cfg.Namespaces = []string{keyNamespace}
	}
	if cfg.CAFile == "" && cfg.HTTPClient == nil {
		cfg.CAFile = as.caFile
	}
	if cfg.Now == nil {
		cfg.Now = as.clock.Now
	}
	c, err := apikeyauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// holdRequests makes the server hold every request until the returned
// function is called.
func (as *testAuthServer) holdRequests() (release func()) {
	gate := make(chan struct{})
	as.gate.Store(&gate)
	return func() {
		as.gate.Store(nil)
		close(gate)
	}
}

// writePEM writes der as a PEM certificate into a new temporary file.
func writePEM(t testing.TB, name string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// otherCA returns a self-signed CA certificate that signed nothing the
// test servers present.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "not the auth server's CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// eventually polls cond until it holds, failing the test after five seconds.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	const within = 5 * time.Second
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", within)
		}
		<-tick.C
	}
}
