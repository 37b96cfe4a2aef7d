package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
	webhookv1alpha1 "github.com/apikey-operator/apikey-operator/internal/webhook/v1alpha1"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

var scheme = testenv.Scheme

// loopback is the address every server of the benchmark listens on.
const loopback = "127.0.0.1"

// env is a running test control plane and what the sections share.
type env struct {
	testEnv *envtest.Environment
	// cfg is the admin config without client-side rate limiting, as
	// ctrl.GetConfig gives the manager in a cluster.
	cfg    *rest.Config
	client client.WithWatch
	// managerCfg is cfg with the client-side rate limit that cmd/main.go
	// gives its manager (--kube-api-qps, --kube-api-burst).
	managerCfg *rest.Config

	// reconcilers is the controllers' MaxConcurrentReconciles, as
	// cmd/main.go's --max-concurrent-reconciles.
	reconcilers int

	certDir string
	caPool  *x509.CertPool
	version string // the control plane directory, e.g. 1.37.2-linux-amd64
}

// runControlPlane starts envtest, runs the control-plane sections in order
// and stops it. Sections that cannot run because an earlier step failed
// report that error.
func runControlPlane(c config, r *report, logs *os.File) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	harness.Progress("starting the test control plane (envtest)")
	e, err := startEnv()
	if err != nil {
		r.envErr = err
		harness.Progress("  failed: %v", err)
		return
	}
	r.controlPlane = e.version
	e.reconcilers = c.reconcilers
	e.managerCfg = rest.CopyConfig(e.cfg)
	e.managerCfg.QPS, e.managerCfg.Burst = float32(c.kubeAPIQPS), c.kubeAPIBurst
	if err := e.installPolicies(ctx); err != nil {
		r.envErr = fmt.Errorf("installing the admission policies: %w", err)
		return
	}
	defer func() {
		if err := e.testEnv.Stop(); err != nil {
			_, _ = fmt.Fprintln(logs, "stopping envtest:", err)
		}
		_ = os.RemoveAll(e.certDir)
	}()

	ctrlMgr, err := e.startController(ctx, c)
	if err != nil {
		r.envErr = fmt.Errorf("starting the controller manager: %w", err)
		return
	}
	authMgr, auth, err := e.startAuth(ctx)
	if err != nil {
		_ = ctrlMgr.Stop()
		r.envErr = fmt.Errorf("starting the auth-server manager: %w", err)
		return
	}
	prober := e.newProber(authMgr.url)
	if c.sections["revoke"] {
		harness.Progress("revocation → 401 (%d delete + %d suspend trials)", c.revokeTrials, c.revokeTrials)
		r.revokeKeys = auth.Index().Len()
		r.revoke = runRevoke(ctx, c, e, prober)
	}
	// Before bulk issuance, which can leave the controller with a backlog.
	if c.sections["rotate"] {
		harness.Progress("rotation: annotation → new token usable, grace end → old token refused (%d trials, grace %s)",
			c.rotateTrials, c.rotateGrace)
		r.rotate = runRotate(ctx, c, e, prober)
	}
	if c.sections["issue"] && c.issueKeys > 0 {
		runIssueSection(ctx, c, e, r, auth)
	}
	// After bulk issuance, so its keys are present as the target asks.
	if c.sections["apply"] {
		harness.Progress("create → Ready with Secret (%d trials)", c.applyTrials)
		r.applyKeys = auth.Index().Len()
		r.applyAdmission = e.measureAdmission(ctx, func() { r.apply = runApply(ctx, c, e, prober) })
	}
	// The memory section measures a fresh auth server against a quiet
	// cluster: the controller must not issue tokens for the keys it
	// creates directly, and the first auth server's caches must be gone.
	errCtrl, errAuth := ctrlMgr.Stop(), authMgr.Stop()
	if err := errors.Join(errCtrl, errAuth); err != nil {
		_, _ = fmt.Fprintln(logs, "stopping managers:", err)
	}
	if c.sections["heap"] {
		harness.Progress("heap per key in each mode (up to %d records)", c.heapKeys)
		// Revocation at scale runs under half the combined manager's own
		// throughput; the report compares it with the http section's.
		var httpRPS float64
		if h := r.http; h != nil && h.err == nil {
			httpRPS = h.oursRPS
		}
		r.heap = runHeap(ctx, c, e, httpRPS)
	}
}

// runIssueSection runs bulk issuance and counts the writes and reads the API
// server served meanwhile.
func runIssueSection(ctx context.Context, c config, e *env, r *report, auth *authserver.Server) {
	harness.Progress("bulk issuance of %d ApiKeys", c.issueKeys)
	before, err := e.scrapeRequests(ctx)
	r.issueAdmission = e.measureAdmission(ctx, func() { r.issue = runIssue(ctx, c, e, auth) })
	if err == nil {
		var after map[[2]string]float64
		if after, err = e.scrapeRequests(ctx); err == nil {
			r.issue.writes = requestsBetween(before, after, writeVerbs)
			r.issue.reads = requestsBetween(before, after, readVerbs)
		}
	}
	if err != nil {
		harness.Progress("  counting the API server's requests: %v", err)
	}
}

func startEnv() (*env, error) {
	// The admission webhooks, as config/webhook registers them, served by
	// the controller's manager.
	testEnv, _, err := testenv.Start(testenv.Options{Webhooks: true, WebhookHost: loopback})
	if err != nil {
		return nil, err
	}
	e := &env{testEnv: testEnv, version: filepath.Base(testEnv.BinaryAssetsDirectory)}
	e.cfg = rest.CopyConfig(testEnv.Config)
	e.cfg.QPS, e.cfg.Burst = -1, 0
	if e.client, err = client.NewWithWatch(e.cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, errors.Join(err, e.testEnv.Stop())
	}
	if e.certDir, err = os.MkdirTemp("", "apikey-bench-certs-"); err != nil {
		return nil, errors.Join(err, e.testEnv.Stop())
	}
	caPEM, err := utils.WriteServingCert(e.certDir)
	if err != nil {
		return nil, errors.Join(err, e.testEnv.Stop())
	}
	e.caPool = x509.NewCertPool()
	e.caPool.AppendCertsFromPEM(caPEM)
	return e, nil
}

// runningManager is a manager started in the background, with the base
// URL of its webhook server when it serves an auth server.
type runningManager struct {
	*harness.Manager
	url string
}

func startManager(ctx context.Context, mgr ctrl.Manager) *runningManager {
	return &runningManager{Manager: harness.StartManager(ctx, mgr)}
}

// managerOptions are cmd/main.go's, minus what needs a cluster: no metrics
// server, no probes, no leader election, managed fields stripped from caches.
func managerOptions() ctrl.Options {
	return ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ReaderFailOnMissingInformer: true},
	}
}

// benchPolicy is the controller's policy in every section, with the owner
// rule's names that cmd/main.go defaults to.
func benchPolicy() *policy.Policy {
	return policy.New(policy.Options{
		MaxTTL:                 365 * 24 * time.Hour,
		OwnerPolicyName:        "apikey-operator-owner-policy",
		OwnerPolicyBindingName: "apikey-operator-owner-policy-binding",
	})
}

// installPolicies puts the owner ValidatingAdmissionPolicy, the defaults
// MutatingAdmissionPolicy and their bindings in the API server, named as
// config/default names them in a cluster, so they sit in the admission
// path of every ApiKey create.
func (e *env) installPolicies(ctx context.Context) error {
	owner, err := benchPolicy().OwnerRule()
	if err != nil {
		return err
	}
	defaults, err := benchPolicy().DefaultsRule()
	if err != nil {
		return err
	}
	defaults.Policy.Name = "apikey-operator-" + defaults.Policy.Name
	defaults.Binding.Name = "apikey-operator-" + defaults.Binding.Name
	defaults.Binding.Spec.PolicyName = defaults.Policy.Name
	if err := errors.Join(e.client.Create(ctx, owner.Policy), e.client.Create(ctx, owner.Binding)); err != nil {
		return err
	}
	return testenv.InstallDefaults(ctx, e.client, defaults, metav1.NamespaceDefault)
}

// startController runs the controller and the admission webhooks, as the
// leader-elected Deployment does: its cache options as cmd/main.go's beside
// the controller (it caches nothing), its webhooks registered by envtest from
// config/webhook. It returns once the webhook server answers.
func (e *env) startController(ctx context.Context, c config) (*runningManager, error) {
	opts := managerOptions()
	install := &e.testEnv.WebhookInstallOptions
	opts.WebhookServer = webhook.NewServer(webhook.Options{
		Host: install.LocalServingHost, Port: install.LocalServingPort, CertDir: install.LocalServingCertDir,
	})
	mgr, err := ctrl.NewManager(e.managerCfg, opts)
	if err != nil {
		return nil, err
	}
	rules := benchPolicy()
	if err := harness.SetupController(mgr, rules, c.reconcilers); err != nil {
		return nil, err
	}
	if err := webhookv1alpha1.SetupApiKeyWebhookWithManager(mgr, rules); err != nil {
		return nil, err
	}
	m := startManager(ctx, mgr)
	checker := mgr.GetWebhookServer().StartedChecker()
	err = harness.PollUntil(ctx, 10*time.Millisecond, time.Minute, func() (bool, error) {
		if err := m.Stopped(); err != nil {
			return false, err
		}
		return checker(nil) == nil, nil
	})
	if err != nil {
		return nil, errors.Join(err, m.Stop())
	}
	return m, nil
}

// startAuth runs the auth server alone, as the auth-only Deployment would:
// its endpoints on the webhook server (TLS 1.2+, HTTP/1.1), on 127.0.0.1.
// It returns once the index has synced and the server answers.
func (e *env) startAuth(ctx context.Context) (*runningManager, *authserver.Server, error) {
	port, err := utils.FreePort()
	if err != nil {
		return nil, nil, err
	}
	opts := managerOptions()
	// As cmd/main.go runs an auth-only replica: cached objects trimmed to
	// what the index reads.
	opts.Cache.ByObject = authserver.CacheOptions()
	opts.WebhookServer = webhook.NewServer(webhook.Options{
		Host: loopback, Port: port, CertDir: e.certDir,
		TLSOpts: []func(*tls.Config){func(t *tls.Config) { t.NextProtos = []string{alpnHTTP1} }},
	})
	mgr, err := ctrl.NewManager(e.managerCfg, opts)
	if err != nil {
		return nil, nil, err
	}
	auth := authserver.NewServer(authserver.NewIndex(), authserver.Options{})
	if err := auth.SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}
	m := startManager(ctx, mgr)
	m.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	p := e.newProber(m.url)
	err = harness.PollUntil(ctx, 10*time.Millisecond, 3*time.Minute, func() (bool, error) {
		if err := m.Stopped(); err != nil {
			return false, err
		}
		if !auth.Index().Synced() {
			return false, nil
		}
		_, err := p.status(ctx, "")
		return err == nil, nil
	})
	if err != nil {
		return nil, nil, errors.Join(err, m.Stop())
	}
	return m, auth, nil
}

// prober asks the auth server's /auth about a token over a keep-alive
// connection.
type prober struct {
	url    string
	client *http.Client
}

func (e *env) newProber(url string) *prober {
	return &prober{url: url + "/auth", client: &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: e.caPool},
			MaxIdleConnsPerHost: 2,
		},
	}}
}

// status is /auth's status code for tok ("" sends no token).
func (p *prober) status(ctx context.Context, tok string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return 0, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err // a *url.Error: method and URL, never headers
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// awaitStatus polls /auth with tok every probeInterval until it answers
// want, for at most trialTimeout, and returns when it first did.
func (p *prober) awaitStatus(ctx context.Context, tok string, want int) (time.Time, error) {
	var at time.Time
	err := harness.PollUntil(ctx, probeInterval, trialTimeout, func() (bool, error) {
		code, err := p.status(ctx, tok)
		if err != nil {
			return false, err
		}
		at = time.Now()
		return code == want, nil
	})
	return at, err
}

// createNamespace creates a namespace for one section.
func (e *env) createNamespace(ctx context.Context, name string) error {
	return e.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}
