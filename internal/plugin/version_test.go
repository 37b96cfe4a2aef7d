package plugin

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"

	"github.com/apikey-operator/apikey-operator/internal/version"
)

var _ = Describe("kubectl apikey version", func() {
	BeforeEach(func() {
		saved := []string{version.Version, version.Commit, version.Date}
		version.Version, version.Commit, version.Date = "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-12-01T00:00:00Z"
		DeferCleanup(func() { version.Version, version.Commit, version.Date = saved[0], saved[1], saved[2] })
	})

	It("prints the version, commit and date of the build, as --version does, without contacting the cluster", func() {
		kubeconfig := unreachableKubeconfig()
		want := "kubectl-apikey v1.2.3\n  commit: 0123456789abcdef0123456789abcdef01234567\n  date:   2026-12-01T00:00:00Z\n  go:     "
		for _, args := range [][]string{{"version"}, {"--version"}} {
			r := kubectlApikeyWith(kubeconfig, args...)
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stdout).To(HavePrefix(want))
			Expect(r.stdout).To(Equal(version.Get().Text("kubectl-apikey")))
		}
	})

	It("prints JSON or YAML with -o", func() {
		for _, format := range []string{outputJSON, outputYAML} {
			r := kubectlApikey("version", "-o", format)
			Expect(r.code).To(Equal(0), r.stderr)
			var got version.Info
			Expect(yaml.UnmarshalStrict([]byte(r.stdout), &got)).To(Succeed())
			Expect(got).To(Equal(version.Get()))
		}
		r := kubectlApikey("version", "-o", "name")
		Expect(r.code).To(Equal(1))
		Expect(r.stderr).To(Equal("error: unknown output format \"name\": -o must be one of json, yaml\n"))
	})
})
