//go:build e2e

package security

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

var _ = Describe("Monitoring", func() {
	It("serves, to a scraper holding the shipped metrics-reader role, every metric the alerts and dashboard query", func() {
		By("a key that expires, so the expiry gauge has a series, and an authentication")
		ns := tenantNamespace(alice)
		expiring := newKey(ns, "expiring")
		expiring.Spec.TTL = &metav1.Duration{Duration: time.Hour}
		tok, _ := issueKey(alice, expiring)
		Expect(forwardAuth(tok)).To(Equal(http.StatusOK))

		By("a scraper authenticated by an ApiKey, bound to metrics-reader as Prometheus's ServiceAccount would be")
		scraperTok := metricsScraper(ns)

		queried := queriedMetrics()
		AddReportEntry("metrics the alerts and dashboard query", strings.Join(queried, " "))
		Expect(queried).To(ContainElements("apikey_expiration_timestamp_seconds", "apikey_authentications_total",
			"apikey_index_last_change_timestamp_seconds", "controller_runtime_reconcile_errors_total"), "the queries were read")
		var served []string
		Eventually(func(g Gomega) {
			served = append(scrape(g, manager, scraperTok), scrape(g, authOnly, scraperTok)...)
			g.Expect(served).To(ContainElements(queried))
		}, timeout, interval).Should(Succeed(), "metrics queried but served by neither binary")

		By("a caller without the role is refused")
		Expect(scrapeStatus(manager, tok)).To(Equal(http.StatusForbidden))
	})
})

// metricsScraper issues alice a key in ns bound to the shipped
// metrics-reader ClusterRole, as Prometheus's ServiceAccount would be, and
// returns its token.
func metricsScraper(ns string) string {
	GinkgoHelper()
	tok, scraper := issueKey(alice, newKey(ns, "prometheus"))
	reader := shipped("ClusterRole", "apikey-operator-metrics-reader")
	Expect(reader).NotTo(BeNil(), "config/default ships the metrics-reader ClusterRole")
	Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: objectMeta("", "prometheus-"+randSuffix()),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.GetName()},
		Subjects:   []rbacv1.Subject{userSubject("apikey:" + ns + ":" + scraper.Name)},
	})).To(Succeed())
	return tok
}

// metricsText is all b serves at /metrics to the holder of tok.
func metricsText(g Gomega, b *binary, tok string) string {
	resp, err := metricsGet(b, tok)
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "scraping %s", b.name)
	body, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	return string(body)
}

// scrape reads b's /metrics as the holder of tok and returns the names of
// the series it serves.
func scrape(g Gomega, b *binary, tok string) []string {
	resp, err := metricsGet(b, tok)
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "scraping %s", b.name)
	var names []string
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		names = append(names, name)
	}
	g.Expect(lines.Err()).NotTo(HaveOccurred())
	return names
}

func scrapeStatus(b *binary, tok string) int {
	GinkgoHelper()
	resp, err := metricsGet(b, tok)
	Expect(err).NotTo(HaveOccurred())
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// metricsGet asks b's /metrics with tok as the bearer token. The binaries
// serve metrics with a certificate of their own (no --metrics-cert-path), so
// there is no CA to verify it against.
func metricsGet(b *binary, tok string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, b.metricsURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a self-signed metrics certificate on loopback
	}}
	return c.Do(req)
}

// queriedMetrics are the metric names in the PromQL of the shipped alerts
// (config/prometheus/rules.yaml) and dashboard (config/grafana); the chart
// ships copies of both, which test/deploy keeps equal.
func queriedMetrics() []string {
	GinkgoHelper()
	var exprs []string
	raw, err := os.ReadFile(filepath.Join(repoRoot, "config", "prometheus", "rules.yaml"))
	Expect(err).NotTo(HaveOccurred())
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct{ Expr string } `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	Expect(yaml.Unmarshal(raw, &rule)).To(Succeed())
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	raw, err = os.ReadFile(filepath.Join(repoRoot, "config", "grafana", "apikey-operator.json"))
	Expect(err).NotTo(HaveOccurred())
	var dashboard struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	Expect(json.Unmarshal(raw, &dashboard)).To(Succeed())
	for _, p := range dashboard.Panels {
		for _, t := range p.Targets {
			exprs = append(exprs, t.Expr)
		}
	}
	var names []string
	for _, e := range exprs {
		for _, name := range metricNames(e) {
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

var (
	// What in PromQL is not a metric name: quoted strings, label matchers,
	// range and offset durations, and the label lists of by/without/on/ignoring.
	promQLStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promQLMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promQLRanges    = regexp.MustCompile(`\[[^\]]*\]|\boffset\s+\w+`)
	promQLGroupings = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promQLWords     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(?:\s*\()?`)
	promQLKeywords  = []string{
		"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan",
	}
)

// metricNames returns the metric names expr selects: every identifier left
// once strings, matchers, durations and groupings are gone that is neither
// a function call nor a keyword.
func metricNames(expr string) []string {
	for _, re := range []*regexp.Regexp{promQLStrings, promQLMatchers, promQLRanges, promQLGroupings} {
		expr = re.ReplaceAllString(expr, " ")
	}
	var names []string
	for _, word := range promQLWords.FindAllString(expr, -1) {
		if strings.HasSuffix(word, "(") || slices.Contains(promQLKeywords, strings.ToLower(word)) {
			continue
		}
		names = append(names, word)
	}
	return names
}
