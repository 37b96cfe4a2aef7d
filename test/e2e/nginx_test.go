//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// nginxMain is the rest of an nginx.conf around the http-context file of
// docs/integrations/nginx.md: a foreground process whose files all live in
// the test's directory.
const nginxMain = `daemon off;
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
  include %[1]s/orders.conf;
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

		backendURL := p.listen()
		dir := GinkgoT().TempDir()
		// docs/integrations/nginx.md's conf.d/orders.conf, pointed at this suite.
		orders := testedDocsBlock("nginx.md", "nginx.orders.conf",
			"apikey-operator-webhook-service.apikey-operator-system.svc.cluster.local:443", strings.TrimPrefix(authURL, "https://"),
			"listen 8080;", "listen "+p.addr+";",
			"/etc/nginx/apikey-operator/ca.crt", authCAFile,
			"proxy_ssl_name apikey-operator-webhook-service.apikey-operator-system.svc;", "proxy_ssl_name localhost;",
			"http://orders.team-a.svc.cluster.local", backendURL,
		)
		Expect(os.WriteFile(filepath.Join(dir, "orders.conf"), []byte(orders), 0o600)).To(Succeed())
		conf := filepath.Join(dir, "nginx.conf")
		Expect(os.WriteFile(conf, []byte(fmt.Sprintf(nginxMain, dir)), 0o600)).To(Succeed())
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
			ObjectMeta: metav1.ObjectMeta{Namespace: ordersTeam()},
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
