//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// traefikVersion is the Traefik `make e2e-tools` builds into bin/.
const traefikVersion = "v3.6.12"

var _ = Describe("Traefik ForwardAuth in front of a backend", Ordered, func() {
	p := &frontProxy{
		name:           "Traefik",
		challengeOn403: true,
		// The entry point cleans every path before routing (its
		// http.sanitizePath, on by default); it never redirects.
		forwardedAs: map[string]string{"//orders/7": "/orders/7", "/a/../orders/7": "/orders/7", "/./orders/7": "/orders/7"},
	}

	BeforeAll(func() {
		traefik := proxyBinary("TRAEFIK", "traefik", traefikVersion)
		backendURL := p.listen()

		// docs/integrations/traefik.md's two files, pointed at this suite.
		dir := GinkgoT().TempDir()
		dynamic := filepath.Join(dir, "dynamic.yml")
		static := filepath.Join(dir, "traefik.yml")
		Expect(os.WriteFile(dynamic, []byte(testedDocsBlock("traefik.md", "traefik.dynamic.yml",
			"https://apikey-operator-webhook-service.apikey-operator-system.svc/", authURL+"/",
			"/etc/traefik/apikey-operator/ca.crt", authCAFile,
			"http://orders.team-a.svc.cluster.local", backendURL,
		)), 0o600)).To(Succeed())
		Expect(os.WriteFile(static, []byte(testedDocsBlock("traefik.md", "traefik.static.yml",
			`address: ":8080"`, fmt.Sprintf("address: %q", p.addr),
			"/etc/traefik/dynamic.yml", dynamic,
		)), 0o600)).To(Succeed())
		startProxy(p, traefik, []string{"--configFile=" + static}, nil)
	})

	forwardAuthCases(p)
})
