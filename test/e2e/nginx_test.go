//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// nginxConf is the integration docs' NGINX setup: auth_request to /auth,
// identity copied from the auth answer, and the client's own identity
// headers overwritten so they never reach the backend.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d;
    location = /_auth {
      internal;
      proxy_pass %[3]s/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_ssl_trusted_certificate %[4]s;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
    }
    location = /_auth_admin {
      internal;
      proxy_pass %[3]s/auth?scope=links:admin;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_ssl_trusted_certificate %[4]s;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
    }
    location / {
      auth_request /_auth;
      auth_request_set $auth_user $upstream_http_x_auth_request_user;
      auth_request_set $auth_scopes $upstream_http_x_auth_request_scopes;
      proxy_set_header X-Auth-Request-User $auth_user;
      proxy_set_header X-Auth-Request-Scopes $auth_scopes;
      proxy_set_header Authorization "";
      proxy_pass %[5]s;
    }
    location /admin/ {
      auth_request /_auth_admin;
      auth_request_set $auth_user $upstream_http_x_auth_request_user;
      proxy_set_header X-Auth-Request-User $auth_user;
      proxy_set_header Authorization "";
      proxy_pass %[5]s;
    }
  }
}
`

var _ = Describe("nginx auth_request in front of a backend", Ordered, func() {
	var (
		proxyURL string
		backend  *recordingBackend
	)

	BeforeAll(func() {
		nginx, err := exec.LookPath("nginx")
		if err != nil {
			nginx = "/usr/sbin/nginx"
		}
		_, err = os.Stat(nginx)
		Expect(err).NotTo(HaveOccurred(), "nginx is not installed: apt-get install nginx-light (.ci/run does)")

		backend = &recordingBackend{}
		srv := httptest.NewServer(backend)
		DeferCleanup(srv.Close)

		dir := GinkgoT().TempDir()
		port, err := utils.FreePort()
		Expect(err).NotTo(HaveOccurred())
		conf := filepath.Join(dir, "nginx.conf")
		Expect(os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, port, authURL, authCAFile, srv.URL)), 0o600)).To(Succeed())
		cmd := exec.Command(nginx, "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
		cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		proxyURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		Eventually(func() error {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				_ = c.Close()
			}
			return err
		}, timeout, interval).Should(Succeed())
	})

	get := func(path string, headers map[string]string) int {
		GinkgoHelper()
		req, err := http.NewRequest(http.MethodGet, proxyURL+path, nil)
		Expect(err).NotTo(HaveOccurred())
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	It("lets a valid key reach the backend with the key's identity, and only that", func() {
		ns := newNamespace()
		tok, key := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns},
			Spec:       apikeysv1alpha1.ApiKeySpec{Scopes: []string{"links:read"}},
		})
		user := "apikey:" + ns + ":" + key.Name

		Expect(get("/links", map[string]string{"Authorization": "Bearer " + tok})).To(Equal(200))
		seen := backend.last()
		Expect(seen.Get("X-Auth-Request-User")).To(Equal(user))
		Expect(seen.Get("X-Auth-Request-Scopes")).To(Equal("links:read"))
		Expect(seen.Get("Authorization")).To(BeEmpty(), "the token must not travel on to the backend")

		By("a client-sent identity header is overwritten by the auth answer")
		Expect(get("/links", map[string]string{"Authorization": "Bearer " + tok, "X-Auth-Request-User": "admin"})).To(Equal(200))
		Expect(backend.last().Values("X-Auth-Request-User")).To(Equal([]string{user}))

		By("the X-API-Key header works too")
		Expect(get("/links", map[string]string{"X-API-Key": tok})).To(Equal(200))

		By("a key without the required scope gets 403")
		Expect(get("/admin/users", map[string]string{"Authorization": "Bearer " + tok})).To(Equal(403))
	})

	// passes reports whether nginx lets tok through to the backend (200) or
	// refuses it (401); any other answer fails the spec.
	passes := func(tok string) bool {
		GinkgoHelper()
		status := get("/links", map[string]string{"Authorization": "Bearer " + tok})
		Expect(status).To(BeElementOf(200, 401))
		return status == 200
	}

	It("passes a rotated key's new token at once, and its old one until validUntil", func() {
		oldTok, key := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace()},
			Spec: apikeysv1alpha1.ApiKeySpec{
				Rotation: &apikeysv1alpha1.Rotation{GracePeriod: &metav1.Duration{Duration: 3 * time.Second}},
			},
		})
		Expect(passes(oldTok)).To(BeTrue())

		By("rotating with a 3s grace period")
		newTok, rotated := rotate(key, "e2e-nginx")
		validUntil := previousKeyUntil(rotated, oldTok)

		By("the new token passes on its first try")
		Expect(passes(newTok)).To(BeTrue())

		By("the old token passes before its validUntil and is refused after it")
		Expect(time.Until(validUntil)).To(BeNumerically(">", graceMargin), "too little of the grace period is left to check it")
		Expect(passes(oldTok)).To(BeTrue())
		late := awaitRefusal(validUntil, time.Second, func() bool { return passes(oldTok) })
		AddReportEntry("nginx: the old token after validUntil", late.String())
		Expect(passes(newTok)).To(BeTrue())
	})

	It("refuses the old token right after a rotation without a grace period", func() {
		oldTok, key := createReadyKey(&apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace()}})
		Expect(passes(oldTok)).To(BeTrue())

		newTok, rotated := rotate(key, "e2e-nginx-no-grace")
		rotatedAt := time.Now()
		Expect(rotated.Status.PreviousKeys).To(BeEmpty())
		Expect(passes(newTok)).To(BeTrue(), "the new token on its first try")
		// Status may report the rotation just before the old record is
		// deleted; the auth server then hears of the deletion by watch.
		probes := 0
		Eventually(func() bool { probes++; return passes(oldTok) }, time.Second, 10*time.Millisecond).Should(BeFalse())
		AddReportEntry("nginx, no grace period: the old token after status reported the rotation",
			fmt.Sprintf("refused by probe %d, answered %s after it", probes, time.Since(rotatedAt).Round(time.Millisecond)))
	})

	It("refuses missing and invalid keys before the backend sees anything", func() {
		before := backend.count()
		Expect(get("/links", nil)).To(Equal(401))
		Expect(get("/links", map[string]string{"Authorization": "Bearer ak_not-a-real-token"})).To(Equal(401))
		Expect(get("/links", map[string]string{"Authorization": "Bearer ak_nope", "X-Auth-Request-User": "admin"})).To(Equal(401))
		Expect(backend.count()).To(Equal(before))
	})
})

// recordingBackend answers 200 and remembers the headers of each request.
type recordingBackend struct {
	mu   sync.Mutex
	seen []http.Header
}

func (b *recordingBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.seen = append(b.seen, r.Header.Clone())
	b.mu.Unlock()
	_, _ = io.WriteString(w, "backend")
}

func (b *recordingBackend) last() http.Header {
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
