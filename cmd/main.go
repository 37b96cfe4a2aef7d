// Command manager runs the apikey-operator: the controller that issues API
// keys and the auth server that answers for them, together or apart.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/certs"
	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/logs"
	"github.com/apikey-operator/apikey-operator/internal/memlimit"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/version"
	webhookv1alpha1 "github.com/apikey-operator/apikey-operator/internal/webhook/v1alpha1"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apikeysv1alpha1.AddToScheme(scheme))
}

// config is the manager's command line.
type config struct {
	metricsAddr, probeAddr                           string
	metricsCertPath, metricsCertName, metricsCertKey string
	webhookCertPath, webhookCertName, webhookCertKey string
	webhookHost                                      string
	webhookPort                                      int
	enableLeaderElection, secureMetrics, enableHTTP2 bool
	enableController, enableAuthServer               bool
	maxTTL, usageFlushInterval                       time.Duration
	apiKeyHeader                                     string
	enableAdmission                                  bool
	forbiddenGroups                                  string
	namespace                                        string
	ownerRequesters, ownerPolicy, ownerPolicyBinding string
	certMode, webhookCertSecret, webhookService      string
	mutatingWebhookConfiguration                     string
	validatingWebhookConfiguration                   string
	webhookCertExtraServices                         string
	webhookCASecret                                  string
	maxConcurrentReconciles                          int
	kubeAPIQPS                                       float64
	kubeAPIBurst                                     int
	memLimitRatio                                    float64
	version                                          bool
}

// The --cert-mode values: where the webhook server's certificate comes from.
const (
	// certModeCertManager reads a certificate that cert-manager (or anyone)
	// mounts at --webhook-cert-path.
	certModeCertManager = "cert-manager"
	// certModeSelfSigned keeps an own CA and certificate in a Secret and
	// injects the CA into the webhook configurations.
	certModeSelfSigned = "self-signed"
)

func parseFlags() (config, zap.Options) {
	var c config
	flag.StringVar(&c.metricsAddr, "metrics-bind-address", "0",
		"Address the metrics endpoint binds to, e.g. :8443 for HTTPS or :8080 for HTTP; 0 disables it.")
	flag.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081", "Address the health probe endpoint binds to.")
	flag.BoolVar(&c.enableLeaderElection, "leader-elect", false,
		"Elect a leader so that only one manager issues keys at a time. The auth server runs on every replica regardless.")
	flag.BoolVar(&c.secureMetrics, "metrics-secure", true,
		"Serve metrics over HTTPS with authentication and authorization; false serves plain HTTP.")
	flag.StringVar(&c.webhookHost, "webhook-host", "",
		"Address the webhook server (admission webhooks and the auth server) listens on; empty means all.")
	flag.IntVar(&c.webhookPort, "webhook-port", 9443, "Port of the webhook server.")
	flag.StringVar(&c.webhookCertPath, "webhook-cert-path", "", "Directory holding the webhook server's certificate.")
	flag.StringVar(&c.webhookCertName, "webhook-cert-name", "tls.crt", "Webhook certificate file name.")
	flag.StringVar(&c.webhookCertKey, "webhook-cert-key", "tls.key", "Webhook key file name.")
	flag.StringVar(&c.metricsCertPath, "metrics-cert-path", "", "Directory holding the metrics server's certificate.")
	flag.StringVar(&c.metricsCertName, "metrics-cert-name", "tls.crt", "Metrics certificate file name.")
	flag.StringVar(&c.metricsCertKey, "metrics-cert-key", "tls.key", "Metrics key file name.")
	flag.BoolVar(&c.enableHTTP2, "enable-http2", false,
		"Serve HTTP/2 on the metrics and webhook servers; off by default (HTTP/2 Stream Cancellation and Rapid Reset CVEs).")
	flag.DurationVar(&c.maxTTL, "max-ttl", 365*24*time.Hour,
		"Longest a key may live after issuance; keys without an expiry get this one. 0 means unlimited.")
	flag.BoolVar(&c.enableController, "enable-controller", true,
		"Run the controller that issues keys. false runs the auth server alone, for a separately scaled Deployment.")
	flag.BoolVar(&c.enableAuthServer, "enable-auth-server", true,
		"Serve /tokenreview, /auth and /verify on the webhook server (port 9443), ahead of the admission webhooks.")
	flag.StringVar(&c.apiKeyHeader, "api-key-header", "X-API-Key",
		"Request header forward-auth reads a token from when there is no Authorization: Bearer.")
	flag.DurationVar(&c.usageFlushInterval, "usage-flush-interval", time.Minute,
		"How often last-used times are written to ApiKeyRecord status (shown on the ApiKey), at most once per token.")
	flag.BoolVar(&c.enableAdmission, "enable-admission", true,
		"Serve the ApiKey admission webhooks (restore a dropped owner; check lifetimes and Secret metadata). Needs --enable-controller.")
	flag.StringVar(&c.forbiddenGroups, "forbidden-groups", "",
		"Comma-separated groups no key ever carries, besides system:masters.")
	flag.StringVar(&c.namespace, "namespace", envOr("POD_NAMESPACE", "apikey-operator-system"),
		"Namespace the operator runs in.")
	flag.StringVar(&c.ownerRequesters, "owner-requesters", "",
		"Comma-separated service accounts (system:serviceaccount:<ns>:<name>) that may create identity: Owner keys; "+
			"must match the owner policy's ownerRequesters list.")
	flag.StringVar(&c.ownerPolicy, "owner-policy", "apikey-operator-owner-policy",
		"ValidatingAdmissionPolicy that enforces who may own a key; Owner keys are issued only while it is in force as shipped.")
	flag.StringVar(&c.ownerPolicyBinding, "owner-policy-binding", "apikey-operator-owner-policy-binding",
		"ValidatingAdmissionPolicyBinding of --owner-policy.")
	flag.StringVar(&c.certMode, "cert-mode", certModeCertManager,
		"Where the webhook server's certificate comes from: cert-manager (mounted at --webhook-cert-path) or self-signed "+
			"(the operator keeps its own CA in --webhook-ca-secret and injects it into the webhook configurations).")
	flag.StringVar(&c.webhookCertSecret, "webhook-cert-secret", "apikey-operator-webhook-server-cert",
		"self-signed: Secret in --namespace holding the webhook certificate, its key and the CA bundle; created if missing. "+
			"Every replica reads it.")
	flag.StringVar(&c.webhookCASecret, "webhook-ca-secret", "apikey-operator-webhook-ca",
		"self-signed: Secret in --namespace holding the CA and its private key; created if missing. "+
			"Only replicas running the controller read it.")
	flag.StringVar(&c.webhookService, "webhook-service", "apikey-operator-webhook-service",
		"self-signed: Service in --namespace the webhook certificate is issued for.")
	flag.StringVar(&c.mutatingWebhookConfiguration, "mutating-webhook-configuration", "apikey-operator-mutating-webhook-configuration",
		"self-signed: MutatingWebhookConfiguration that gets the CA bundle.")
	flag.StringVar(&c.validatingWebhookConfiguration, "validating-webhook-configuration", "apikey-operator-validating-webhook-configuration",
		"self-signed: ValidatingWebhookConfiguration that gets the CA bundle.")
	flag.StringVar(&c.webhookCertExtraServices, "webhook-cert-extra-services", "",
		"self-signed: comma-separated further Services in --namespace the certificate covers, e.g. the auth-only Deployment's.")
	opts := zap.Options{Development: false}
	flag.IntVar(&c.maxConcurrentReconciles, "max-concurrent-reconciles", 8,
		"ApiKeys reconciled at once. A pass mostly waits on the API server, so several per core keep it busy.")
	flag.Float64Var(&c.kubeAPIQPS, "kube-api-qps", 100,
		"Requests per second the manager may send to the API server (client-side limit; the API server's "+
			"priority and fairness still applies).")
	flag.IntVar(&c.kubeAPIBurst, "kube-api-burst", 200, "Requests the manager may send in a burst above --kube-api-qps.")
	flag.Float64Var(&c.memLimitRatio, "auto-gomemlimit-ratio", 0.9,
		"Give the Go runtime this share of the container's memory limit (cgroup) as its soft limit, so that it "+
			"collects garbage harder near the limit rather than be killed; 0 turns it off, and GOMEMLIMIT overrides it.")
	flag.BoolVar(&c.version, "version", false, "Print the manager's version, commit and build date, and exit.")
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	return c, opts
}

func main() {
	c, logOpts := parseFlags()
	if c.version {
		fmt.Print(version.Get().Text("manager"))
		return
	}
	// Through logs, no --zap-log-level makes client-go dump a Secret it writes or reads.
	logs.SetLogger(zap.New(zap.UseFlagOptions(&logOpts)))
	if err := setMemoryLimit(c.memLimitRatio); err != nil {
		setupLog.Error(err, "Invalid flags")
		os.Exit(1)
	}
	if err := run(c); err != nil {
		setupLog.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}

// setMemoryLimit gives the Go runtime ratio of the container's memory limit.
// A limit it cannot read is logged, not fatal: the manager runs as it would
// without the flag.
func setMemoryLimit(ratio float64) error {
	if ratio < 0 || ratio > 1 {
		return fmt.Errorf("--auto-gomemlimit-ratio is %g; it must be between 0 (off) and 1", ratio)
	}
	set, err := memlimit.Apply(memlimit.CgroupRoot, ratio, os.Getenv)
	switch {
	case err != nil:
		setupLog.Error(err, "Could not read the container's memory limit; the Go runtime has none")
	case set > 0:
		setupLog.Info("Gave the Go runtime the container's memory limit", "ratio", ratio, "bytes", set)
	}
	return nil
}

// run builds the manager from c, adds the parts c enables and runs it until
// a signal arrives.
func run(c config) error {
	var tlsOpts []func(*tls.Config)
	if !c.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(t *tls.Config) { t.NextProtos = []string{"http/1.1"} })
	}

	var auth *authserver.Server
	if c.enableAuthServer {
		auth = authserver.NewServer(authserver.NewIndex(), authserver.Options{
			APIKeyHeader:       c.apiKeyHeader,
			UsageFlushInterval: c.usageFlushInterval,
		})
	}
	webhookServer, addWebhookCertSource, err := newWebhookServer(c, tlsOpts, auth)
	if err != nil {
		return err
	}

	metricsOpts := metricsserver.Options{BindAddress: c.metricsAddr, SecureServing: c.secureMetrics, TLSOpts: tlsOpts}
	if c.secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	if c.metricsCertPath != "" {
		metricsOpts.CertDir, metricsOpts.CertName, metricsOpts.KeyName = c.metricsCertPath, c.metricsCertName, c.metricsCertKey
	}

	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS, restConfig.Burst = float32(c.kubeAPIQPS), c.kubeAPIBurst
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOpts,
		WebhookServer:          webhookServer,
		HealthProbeBindAddress: c.probeAddr,
		LeaderElection:         c.enableLeaderElection,
		LeaderElectionID:       "manager.apikeys.dev",
		Cache:                  cacheOptions(c),
	})
	if err != nil {
		return err
	}
	if err := addWebhookCertSource(mgr); err != nil {
		return err
	}

	if err := addParts(mgr, c, auth); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}

	setupLog.Info("Starting manager", "controller", c.enableController, "admission", c.enableController && c.enableAdmission,
		"authServer", c.enableAuthServer, "maxTTL", c.maxTTL)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// addParts adds what c enables: the controller and, beside it, the
// admission webhooks (they share the policy); the auth server, if auth is
// not nil.
func addParts(mgr ctrl.Manager, c config, auth *authserver.Server) error {
	if c.enableController {
		rules := rulesFor(c)
		if err := (&controller.ApiKeyReconciler{
			Client:    mgr.GetClient(),
			APIReader: mgr.GetAPIReader(),
			Recorder:  mgr.GetEventRecorder("apikey-operator"),
			Policy:    rules,

			MaxConcurrentReconciles: c.maxConcurrentReconciles,
		}).SetupWithManager(mgr); err != nil {
			return err
		}
		if c.enableAdmission {
			if err := webhookv1alpha1.SetupApiKeyWebhookWithManager(mgr, rules); err != nil {
				return err
			}
		}
	}
	if auth != nil {
		return auth.SetupWithManager(mgr)
	}
	return nil
}

// newWebhookServer builds the server for admission and, if auth is not
// nil, the auth server, whose endpoints it serves ahead of the admission
// webhooks' ServeMux (on their paths as sent); and what adds its
// certificate source to the manager. With cert-manager, the certificate
// mounted at --webhook-cert-path is reloaded when it changes; self-signed,
// the server starts once setupSelfSignedCert has written the certificate,
// and watches it.
func newWebhookServer(c config, tlsOpts []func(*tls.Config), auth *authserver.Server) (webhook.Server, func(ctrl.Manager) error, error) {
	opts := webhook.Options{Host: c.webhookHost, Port: c.webhookPort, TLSOpts: tlsOpts}
	serving := func(o webhook.Options) webhook.Server {
		if auth != nil {
			return auth.WebhookServer(o)
		}
		return authserver.AdmissionServer(o)
	}
	switch c.certMode {
	case certModeSelfSigned:
		opts.CertDir, opts.CertName, opts.KeyName = selfSignedCertDir(c), c.webhookCertName, c.webhookCertKey
		// certs.NewWebhookServer would build controller-runtime's server;
		// this waits for the certificate the same way around ours.
		return &certs.WebhookServer{Server: serving(opts)}, func(mgr ctrl.Manager) error { return setupSelfSignedCert(mgr, c) }, nil
	case certModeCertManager:
		if c.webhookCertPath == "" {
			return serving(opts), func(ctrl.Manager) error { return nil }, nil
		}
		watcher, err := certwatcher.New(
			filepath.Join(c.webhookCertPath, c.webhookCertName), filepath.Join(c.webhookCertPath, c.webhookCertKey))
		if err != nil {
			return nil, nil, err
		}
		opts.TLSOpts = append(opts.TLSOpts, func(t *tls.Config) { t.GetCertificate = watcher.GetCertificate })
		return serving(opts), func(mgr ctrl.Manager) error { return mgr.Add(watcher) }, nil
	}
	return nil, nil, fmt.Errorf("--cert-mode must be %s or %s, not %q", certModeCertManager, certModeSelfSigned, c.certMode)
}

// setupSelfSignedCert has every replica install the webhook certificate
// from its Secret and stay unready until it has; replicas running the
// controller also issue, renew and inject it while they lead.
func setupSelfSignedCert(mgr ctrl.Manager, c config) error {
	installed, err := certs.Setup(mgr, certs.Options{
		Namespace:                      c.namespace,
		SecretName:                     c.webhookCertSecret,
		CASecretName:                   c.webhookCASecret,
		Service:                        c.webhookService,
		MutatingWebhookConfiguration:   c.mutatingWebhookConfiguration,
		ValidatingWebhookConfiguration: c.validatingWebhookConfiguration,
		CertDir:                        selfSignedCertDir(c),
		CertName:                       c.webhookCertName,
		KeyName:                        c.webhookCertKey,
		ExtraHosts:                     serviceHosts(c.namespace, splitList(c.webhookCertExtraServices)),
		Issue:                          c.enableController,
	})
	if err != nil {
		return err
	}
	return mgr.AddReadyzCheck("webhook-cert", certs.ReadyzCheck(installed))
}

// selfSignedCertDir is where the self-signed certificate is written:
// --webhook-cert-path, or the webhook server's default directory. It must be
// writable, e.g. an emptyDir.
func selfSignedCertDir(c config) string {
	if c.webhookCertPath != "" {
		return c.webhookCertPath
	}
	return filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
}

// cacheOptions drops managedFields everywhere (nothing here reads them),
// and for an auth-server-only replica every field the index does not read.
// The manager's cache holds nothing on purpose: the controller and the auth
// server know ApiKeys, records and Secrets from watches that keep a few
// bytes of each. So a read of a kind no informer was started for fails
// instead of starting one: a stray read must not bring a whole cache back.
func cacheOptions(c config) cache.Options {
	opts := cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ReaderFailOnMissingInformer: true}
	if !c.enableController {
		opts.ByObject = authserver.CacheOptions()
	}
	return opts
}

// rulesFor builds the rules the controller and the admission webhooks share.
func rulesFor(c config) *policy.Policy {
	return policy.New(policy.Options{
		MaxTTL:                 c.maxTTL,
		ForbiddenGroups:        splitList(c.forbiddenGroups),
		OwnerRequesters:        splitList(c.ownerRequesters),
		OwnerPolicyName:        c.ownerPolicy,
		OwnerPolicyBindingName: c.ownerPolicyBinding,
	})
}

// serviceHosts are the in-cluster DNS names of services in namespace.
func serviceHosts(namespace string, services []string) []string {
	hosts := make([]string, 0, 2*len(services))
	for _, svc := range services {
		hosts = append(hosts, svc+"."+namespace+".svc", svc+"."+namespace+".svc.cluster.local")
	}
	return hosts
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
