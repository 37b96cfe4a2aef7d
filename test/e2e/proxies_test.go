//go:build e2e

package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/token"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// identityHeaders are the five headers a forward-auth answer sets; a
// backend must see the auth server's values or none, never a client's.
var identityHeaders = []string{
	authserver.HeaderUser, authserver.HeaderGroups, authserver.HeaderScopes, authserver.HeaderName, authserver.HeaderNamespace,
}

// Challenges the auth server answers with (docs/integrations/README.md).
const (
	challengeNoToken      = `Bearer realm="apikeys"`
	challengeInvalidToken = `Bearer error="invalid_token"`
	challengeScope        = `Bearer error="insufficient_scope"`
)

// uncleanPaths are request targets a proxy may clean, reject or redirect;
// each must still be decided by the auth server.
var uncleanPaths = []string{"//orders/7", "/a/../orders/7", "/./orders/7"}

// frontProxy is a proxy in front of a recordingBackend, configured the way
// its integration page shows: /healthz unchecked, reads needing
// orders:read, every other method orders:write, all for the audience
// orders-api.
type frontProxy struct {
	name    string
	addr    string // host:port the proxy listens on
	backend *recordingBackend
	// challengeOn403 says whether the proxy passes the auth server's
	// WWW-Authenticate on to the client with a 403 (nginx does not).
	challengeOn403 bool
	// forwardedAs is the request target the backend receives for each of
	// uncleanPaths, with a token: what the proxy does to such a path.
	forwardedAs map[string]string
}

// listen starts p's recording backend and picks the address p listens on,
// returning the backend's URL for the proxy's configuration.
func (p *frontProxy) listen() (backendURL string) {
	GinkgoHelper()
	p.backend = &recordingBackend{}
	backend := httptest.NewServer(p.backend)
	DeferCleanup(backend.Close)
	port, err := utils.FreePort()
	Expect(err).NotTo(HaveOccurred())
	p.addr = fmt.Sprintf("127.0.0.1:%d", port)
	return backend.URL
}

// proxyBinary is the proxy `make e2e-tools` built into bin/ as
// <name>-<version>, or the one $env names.
func proxyBinary(env, name, version string) string {
	GinkgoHelper()
	path, err := utils.FindTool(env, name+"-"+version, 10*time.Second)
	Expect(err).NotTo(HaveOccurred(), "%s %s is missing: `make e2e-tools` builds it into bin/", name, version)
	return path
}

// proxyAnswer is what a client got from the proxy.
type proxyAnswer struct {
	status    int
	challenge string
	location  string
}

// send writes one request to the proxy as raw HTTP/1.1, so that target
// reaches it byte for byte (Go's client would not send every unclean
// path as written), and reads the answer.
func (p *frontProxy) send(method, target string, header http.Header) proxyAnswer {
	GinkgoHelper()
	conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = conn.Close() }()
	return exchange(conn, p.addr, method, target, header)
}

// exchange sends one request on conn and reads the answer.
func exchange(conn net.Conn, host, method, target string, header http.Header) proxyAnswer {
	GinkgoHelper()
	Expect(conn.SetDeadline(time.Now().Add(15 * time.Second))).To(Succeed())
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, host)
	if method != http.MethodGet && method != http.MethodHead {
		b.WriteString("Content-Length: 0\r\n")
	}
	Expect(header.Write(&b)).To(Succeed())
	b.WriteString("\r\n")
	_, err := io.WriteString(conn, b.String())
	Expect(err).NotTo(HaveOccurred())
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	Expect(err).NotTo(HaveOccurred())
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return proxyAnswer{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate"), location: resp.Header.Get("Location")}
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// forgedIdentity is every identity header set by a client posing as admin.
func forgedIdentity(h http.Header) http.Header {
	for _, name := range identityHeaders {
		h.Set(name, "admin")
	}
	return h
}

// ordersNamespace is the namespace whose keys the integration pages'
// routes trust (namespace=team-orders in their auth URLs).
const ordersNamespace = "team-orders"

// ordersTeam creates ordersNamespace if it is not there yet and names it.
func ordersTeam() string {
	GinkgoHelper()
	err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ordersNamespace}})
	if !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
	return ordersNamespace
}

// readKey is a key of the orders team holding orders:read only.
func readKey() (string, *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	return createReadyKey(&apikeysv1alpha1.ApiKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ordersTeam()},
		Spec:       apikeysv1alpha1.ApiKeySpec{Scopes: []string{"orders:read"}},
	})
}

// expectIdentity checks that the backend saw key's identity, exactly one
// value of each header, and no credentials.
func expectIdentity(seen backendRequest, key *apikeysv1alpha1.ApiKey) {
	GinkgoHelper()
	want := map[string]string{
		authserver.HeaderUser:      "apikey:" + key.Namespace + ":" + key.Name,
		authserver.HeaderGroups:    "apikeys,apikeys:" + key.Namespace,
		authserver.HeaderScopes:    strings.Join(key.Spec.Scopes, " "),
		authserver.HeaderName:      key.Name,
		authserver.HeaderNamespace: key.Namespace,
	}
	for name, value := range want {
		Expect(seen.header.Values(name)).To(Equal([]string{value}), "%s at the backend", name)
	}
	// Booleans: a failure message must not print the token.
	_, sent := seen.header["Authorization"]
	Expect(sent).To(BeFalse(), "the token must not travel on to the backend in Authorization")
	_, sent = seen.header["X-Api-Key"]
	Expect(sent).To(BeFalse(), "the token must not travel on to the backend in X-API-Key")
}

// forwardAuthCases are the specs every proxy in front of the auth server
// must pass; p is filled in by the caller's BeforeAll.
func forwardAuthCases(p *frontProxy) {
	It("lets a valid key reach the backend with the key's identity, and only that", func() {
		tok, key := readKey()
		Expect(p.send(http.MethodGet, "/orders/7", bearer(tok)).status).To(Equal(http.StatusOK))
		expectIdentity(p.backend.last(), key)

		By("client-sent identity headers are overwritten by the auth answer")
		Expect(p.send(http.MethodGet, "/orders/7", forgedIdentity(bearer(tok))).status).To(Equal(http.StatusOK))
		expectIdentity(p.backend.last(), key)

		By("the X-API-Key header works too, and does not reach the backend either")
		Expect(p.send(http.MethodGet, "/orders/7", http.Header{"X-Api-Key": {tok}}).status).To(Equal(http.StatusOK))
		expectIdentity(p.backend.last(), key)

		By("a client that names the identity headers in Connection, as hop-by-hop, does not take them away")
		hop := bearer(tok)
		hop.Set("Connection", strings.Join(identityHeaders, ", "))
		Expect(p.send(http.MethodGet, "/orders/7", hop).status).To(Equal(http.StatusOK))
		expectIdentity(p.backend.last(), key)
	})

	It("strips client-sent identity headers on the unchecked route, and sends it only its own path", func() {
		Expect(p.send(http.MethodGet, "/healthz", forgedIdentity(http.Header{})).status).To(Equal(http.StatusOK))
		seen := p.backend.last()
		Expect(seen.target).To(Equal("/healthz"))
		for _, name := range identityHeaders {
			Expect(seen.header.Values(name)).To(BeEmpty(), name)
		}

		By("a path the proxy cleans to /healthz must not carry another route's path past the check")
		for _, target := range []string{"/admin/../healthz", "/admin/..%2Fhealthz", "/admin/%2E%2E/healthz"} {
			before := p.backend.count()
			answer := p.send(http.MethodGet, target, forgedIdentity(http.Header{}))
			if answer.status != http.StatusOK {
				Expect(p.backend.count()).To(Equal(before), "%s was refused (%d) but reached the backend", target, answer.status)
				continue
			}
			seen := p.backend.last()
			Expect(seen.target).To(Equal("/healthz"), "%s skipped the check and reached the backend as", target)
			for _, name := range identityHeaders {
				Expect(seen.header.Values(name)).To(BeEmpty(), "%s: %s", target, name)
			}
		}
	})

	It("refuses missing and invalid keys with the auth server's challenge, before the backend sees anything", func() {
		before := p.backend.count()
		answer := p.send(http.MethodGet, "/orders/7", forgedIdentity(http.Header{}))
		Expect(answer.status).To(Equal(http.StatusUnauthorized))
		Expect(answer.challenge).To(Equal(challengeNoToken))

		answer = p.send(http.MethodGet, "/orders/7", forgedIdentity(bearer("ak_not-a-real-token")))
		Expect(answer.status).To(Equal(http.StatusUnauthorized))
		Expect(answer.challenge).To(Equal(challengeInvalidToken))

		answer = p.send(http.MethodGet, "/orders/7", http.Header{"X-Api-Key": {"ak_nope"}})
		Expect(answer.status).To(Equal(http.StatusUnauthorized))
		Expect(answer.challenge).To(Equal(challengeInvalidToken))
		Expect(p.backend.count()).To(Equal(before))
	})

	It("refuses a key without the scope a route requires with 403, and passes one with it", func() {
		tok, _ := readKey()
		before := p.backend.count()
		answer := p.send(http.MethodPost, "/orders", bearer(tok))
		Expect(answer.status).To(Equal(http.StatusForbidden))
		if p.challengeOn403 {
			Expect(answer.challenge).To(Equal(challengeScope))
		} else {
			Expect(answer.challenge).To(BeEmpty())
		}
		Expect(p.backend.count()).To(Equal(before))

		By("a key that holds the scope passes")
		writeTok, writer := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ordersTeam()},
			Spec:       apikeysv1alpha1.ApiKeySpec{Scopes: []string{"orders:write"}},
		})
		Expect(p.send(http.MethodPost, "/orders", bearer(writeTok)).status).To(Equal(http.StatusOK))
		expectIdentity(p.backend.last(), writer)
	})

	It("refuses a key from a namespace the route does not trust, whatever scopes it claims", func() {
		tok, _ := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace()},
			Spec:       apikeysv1alpha1.ApiKeySpec{Scopes: []string{"orders:*"}},
		})
		before := p.backend.count()
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			answer := p.send(method, "/orders", bearer(tok))
			Expect(answer.status).To(Equal(http.StatusUnauthorized), "%s with another tenant's key, token %s", method, token.Hint(tok))
			Expect(answer.challenge).To(Equal(challengeInvalidToken))
		}
		Expect(p.backend.count()).To(Equal(before))
	})

	It("does not let the client's query choose the audience", func() {
		tok, _ := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ordersTeam()},
			Spec:       apikeysv1alpha1.ApiKeySpec{Scopes: []string{"orders:read"}, Audiences: []string{"registry"}},
		})
		before := p.backend.count()
		answer := p.send(http.MethodGet, "/orders/7?audience=registry", bearer(tok))
		Expect(answer.status).To(Equal(http.StatusUnauthorized), "a key for the audience registry only, token %s", token.Hint(tok))
		Expect(answer.challenge).To(Equal(challengeInvalidToken))
		Expect(p.backend.count()).To(Equal(before))
	})

	It("leaves unclean paths to the auth server's decision, never to a redirect", func() {
		tok, key := readKey()
		for _, target := range uncleanPaths {
			By("GET " + target)
			before := p.backend.count()
			answer := p.send(http.MethodGet, target, http.Header{})
			Expect(answer.status).To(Equal(http.StatusUnauthorized), "%s without a token (Location %q)", target, answer.location)
			Expect(answer.challenge).To(Equal(challengeNoToken), target)
			Expect(p.backend.count()).To(Equal(before), target)

			answer = p.send(http.MethodGet, target, bearer(tok))
			Expect(answer.status).To(Equal(http.StatusOK), "%s with a token (Location %q)", target, answer.location)
			seen := p.backend.last()
			expectIdentity(seen, key)
			AddReportEntry(fmt.Sprintf("%s forwards GET %s to the backend as", p.name, target), seen.target)
			Expect(seen.target).To(Equal(p.forwardedAs[target]), "what %s makes of %s", p.name, target)
		}
	})
}

var _ = Describe("the auth server, asked directly with unclean paths", func() {
	It("answers /auth//x and /auth/../x itself, with the challenge, never with a redirect", func() {
		ca, err := os.ReadFile(authCAFile)
		Expect(err).NotTo(HaveOccurred())
		pool := x509.NewCertPool()
		Expect(pool.AppendCertsFromPEM(ca)).To(BeTrue())
		host := strings.TrimPrefix(authURL, "https://")
		ask := func(target string, header http.Header) proxyAnswer {
			GinkgoHelper()
			conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, ServerName: "localhost"})
			Expect(err).NotTo(HaveOccurred())
			defer func() { _ = conn.Close() }()
			return exchange(conn, host, http.MethodGet, target, header)
		}
		tok, _ := readKey()
		for _, target := range []string{"/auth//x", "/auth/../x", "/auth/./x"} {
			// A 3xx here is a ServeMux cleaning the path: the suite's auth
			// server must be built with authserver.Server.WebhookServer, as
			// cmd/main.go builds it.
			answer := ask(target, http.Header{})
			Expect(answer.status).To(Equal(http.StatusUnauthorized), "%s (Location %q)", target, answer.location)
			Expect(answer.challenge).To(Equal(challengeNoToken), target)
			answer = ask(target, bearer(tok))
			Expect(answer.status).To(Equal(http.StatusOK), "%s with a token (Location %q)", target, answer.location)
		}
	})
})

// startProxy runs a proxy binary with args until the spec tree is done,
// its output going to GinkgoWriter, and waits until it answers /healthz
// from the backend (a proxy may accept connections before its routes are
// loaded).
func startProxy(p *frontProxy, path string, args []string, env []string) {
	GinkgoHelper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Start()).To(Succeed())
	exited := make(chan struct{})
	var exitErr error
	go func() {
		exitErr = cmd.Wait()
		close(exited)
	}()
	DeferCleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	Eventually(func() error {
		select {
		case <-exited:
			StopTrying(fmt.Sprintf("%s exited before it served a request: %v (its output is above)", p.name, exitErr)).Now()
		default:
		}
		conn, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close() }()
		if answer := exchange(conn, p.addr, http.MethodGet, "/healthz", http.Header{}); answer.status != http.StatusOK {
			return fmt.Errorf("/healthz answered %d", answer.status)
		}
		return nil
	}).WithTimeout(90*time.Second).WithPolling(200*time.Millisecond).Should(Succeed(), "%s never served /healthz", p.name)
}

// testedDocsBlock returns the fenced code block of docs/integrations/page
// that follows the line `<!-- tested by test/e2e: name -->`, with every
// placeholder in replacements (old, new pairs, longest first where one
// contains another) replaced. Each placeholder must occur in the block: if
// the page changes one, the test must learn of it. Nothing else is changed,
// so any other edit to the block changes what runs.
func testedDocsBlock(page, name string, replacements ...string) string {
	GinkgoHelper()
	path := filepath.Join("..", "..", "docs", "integrations", page)
	data, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	marker := "<!-- tested by test/e2e: " + name + " -->"
	_, rest, found := strings.Cut(string(data), marker+"\n")
	Expect(found).To(BeTrue(), "%s has no line %q before the block the test runs", path, marker)
	fence, rest, _ := strings.Cut(rest, "\n")
	Expect(fence).To(HavePrefix("```"), "%s: %q must be followed by a fenced code block", path, marker)
	block, _, closed := strings.Cut(rest, "\n```\n")
	Expect(closed).To(BeTrue(), "%s: the block after %q is never closed", path, marker)
	Expect(len(replacements) % 2).To(BeZero())
	for i := 0; i < len(replacements); i += 2 {
		Expect(block).To(ContainSubstring(replacements[i]), "%s: the block %s no longer holds the placeholder the test replaces", path, name)
	}
	return strings.NewReplacer(replacements...).Replace(block + "\n")
}

// backendRequest is what the backend received.
type backendRequest struct {
	target string // the request target as sent, unclean paths included
	header http.Header
}

// recordingBackend answers 200 and remembers each request.
type recordingBackend struct {
	mu   sync.Mutex
	seen []backendRequest
}

func (b *recordingBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.seen = append(b.seen, backendRequest{target: r.RequestURI, header: r.Header.Clone()})
	b.mu.Unlock()
	_, _ = io.WriteString(w, "backend")
}

func (b *recordingBackend) last() backendRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	Expect(b.seen).NotTo(BeEmpty(), "the backend was never reached")
	return b.seen[len(b.seen)-1]
}

func (b *recordingBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.seen)
}
