//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// caddyVersion is the Caddy `make e2e-tools` builds into bin/.
const caddyVersion = "v2.11.9"

var _ = Describe("Caddy forward_auth in front of a backend", Ordered, func() {
	p := &frontProxy{
		name:           "Caddy",
		challengeOn403: true,
		// Caddy neither cleans nor redirects: the backend gets the path
		// as the client sent it.
		forwardedAs: map[string]string{"//orders/7": "//orders/7", "/a/../orders/7": "/a/../orders/7", "/./orders/7": "/./orders/7"},
	}

	BeforeAll(func() {
		caddy := proxyBinary("CADDY", "caddy", caddyVersion)
		backendURL := p.listen()
		_, port, _ := strings.Cut(p.addr, ":")

		// docs/integrations/caddy.md's Caddyfile, pointed at this suite.
		caddyfile := testedDocsBlock("caddy.md", "caddy.Caddyfile",
			"bind 0.0.0.0", "bind 127.0.0.1",
			":8080 {", ":"+port+" {",
			"apikey-operator-webhook-service.apikey-operator-system.svc:443", strings.TrimPrefix(authURL, "https://"),
			"tls_server_name apikey-operator-webhook-service.apikey-operator-system.svc", "tls_server_name localhost",
			"/etc/caddy/apikey-operator/ca.crt", authCAFile,
			"orders.team-a.svc.cluster.local:80", strings.TrimPrefix(backendURL, "http://"),
		)
		dir := GinkgoT().TempDir()
		conf := filepath.Join(dir, "Caddyfile")
		Expect(os.WriteFile(conf, []byte(caddyfile), 0o600)).To(Succeed())
		startProxy(p, caddy, []string{"run", "--config", conf, "--adapter", "caddyfile"},
			[]string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")})
	})

	forwardAuthCases(p)
})
