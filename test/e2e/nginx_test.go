//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// nginxConf is the setup of docs/integrations/nginx.md, copied by hand
// with the suite's addresses in place of the cluster's:
// /healthz unchecked and stripped of identity headers, reads needing
// orders:read and the rest orders:write (for the audience orders-api),
// identity copied from the auth answer over any copy the client sent, and
// the key kept from the backend.
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
  map $request_method $apikey_scope {
    GET     orders:read;
    HEAD    orders:read;
    default orders:write;
  }
  server {
    listen %[2]s;
    location = /_apikey_auth {
      internal;
      proxy_pass %[3]s/auth?audience=orders-api&scope=$apikey_scope;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_ssl_trusted_certificate %[4]s;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
    }
    location = /healthz {
      proxy_set_header X-Auth-Request-User   "";
      proxy_set_header X-Auth-Request-Groups "";
      proxy_set_header X-Auth-Request-Scopes "";
      proxy_set_header X-Apikey-Name         "";
      proxy_set_header X-Apikey-Namespace    "";
      proxy_pass %[5]s;
    }
    location / {
      auth_request /_apikey_auth;
      auth_request_set $apikey_user      $upstream_http_x_auth_request_user;
      auth_request_set $apikey_groups    $upstream_http_x_auth_request_groups;
      auth_request_set $apikey_scopes    $upstream_http_x_auth_request_scopes;
      auth_request_set $apikey_name      $upstream_http_x_apikey_name;
      auth_request_set $apikey_namespace $upstream_http_x_apikey_namespace;
      proxy_set_header X-Auth-Request-User   $apikey_user;
      proxy_set_header X-Auth-Request-Groups $apikey_groups;
      proxy_set_header X-Auth-Request-Scopes $apikey_scopes;
      proxy_set_header X-Apikey-Name         $apikey_name;
      proxy_set_header X-Apikey-Namespace    $apikey_namespace;
      proxy_set_header Authorization "";
      proxy_set_header X-API-Key     "";
      proxy_pass %[5]s;
    }
  }
}
`

var _ = Describe("nginx auth_request in front of a backend", Ordered, func() {
	p := &frontProxy{
		name: "nginx",
		// auth_request passes 401 with the auth server's WWW-Authenticate,
		// and any other refusal as its own page without it.
		challengeOn403: false,
		// nginx cleans the path to choose a location, and proxy_pass
		// without a URI sends the path as the client wrote it.
		forwardedAs: map[string]string{"//orders/7": "//orders/7", "/a/../orders/7": "/a/../orders/7", "/./orders/7": "/./orders/7"},
	}

	BeforeAll(func() {
		nginx, err := exec.LookPath("nginx")
		if err != nil {
			nginx = "/usr/sbin/nginx"
		}
		_, err = os.Stat(nginx)
		Expect(err).NotTo(HaveOccurred(), "nginx is not installed: apt-get install nginx-light (.ci/run does)")

		p.backend = &recordingBackend{}
		backend := httptest.NewServer(p.backend)
		DeferCleanup(backend.Close)

		dir := GinkgoT().TempDir()
		port, err := utils.FreePort()
		Expect(err).NotTo(HaveOccurred())
		p.addr = fmt.Sprintf("127.0.0.1:%d", port)
		conf := filepath.Join(dir, "nginx.conf")
		Expect(os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, p.addr, authURL, authCAFile, backend.URL)), 0o600)).To(Succeed())
		startProxy(p, nginx, []string{"-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log")}, nil)
	})

	forwardAuthCases(p)

	// passes reports whether nginx lets tok through to the backend (200) or
	// refuses it (401); any other answer fails the spec.
	passes := func(tok string) bool {
		GinkgoHelper()
		status := p.send(http.MethodGet, "/orders/7", bearer(tok)).status
		Expect(status).To(BeElementOf(http.StatusOK, http.StatusUnauthorized))
		return status == http.StatusOK
	}

	It("passes a rotated key's new token at once, and its old one until validUntil", func() {
		oldTok, key := createReadyKey(&apikeysv1alpha1.ApiKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace()},
			Spec: apikeysv1alpha1.ApiKeySpec{
				Scopes:   []string{"orders:read"},
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
		oldTok, key := readKey()
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
})
