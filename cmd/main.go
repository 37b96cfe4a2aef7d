// Command manager runs the apikey-operator: the controller that issues API
// keys and the auth server that answers for them, together or apart.
package main

import (
	"context"
	"crypto/tls"
	"flag"
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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/policy"
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
	namespace, attestationKeySecret                  string
}

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
		"Serve /tokenreview, /auth and /verify on the webhook server (port 9443).")
	flag.StringVar(&c.apiKeyHeader, "api-key-header", "X-API-Key",
		"Request header forward-auth reads a token from when there is no Authorization: Bearer.")
	flag.DurationVar(&c.usageFlushInterval, "usage-flush-interval", time.Minute,
		"How often last-used times are written to ApiKey status, at most once per key.")
	flag.BoolVar(&c.enableAdmission, "enable-admission", true,
		"Serve the ApiKey admission webhooks (stamp owners, enforce identity and expiry rules). Needs --enable-controller.")
	flag.StringVar(&c.forbiddenGroups, "forbidden-groups", "",
		"Comma-separated groups no key ever carries, besides system:masters.")
	flag.StringVar(&c.namespace, "namespace", envOr("POD_NAMESPACE", "apikey-operator-system"),
		"Namespace the operator runs in; it keeps its attestation key there.")
	flag.StringVar(&c.attestationKeySecret, "attestation-key-secret", "apikey-operator-attestation-key",
		"Secret (created if missing) holding the key that signs owners stamped by admission.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	return c, opts
}

func main() {
	c, logOpts := parseFlags()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&logOpts)))
	if err := run(c); err != nil {
		setupLog.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}

// run builds the manager from c, adds the parts c enables and runs it until
// a signal arrives.
func run(c config) error {
	var tlsOpts []func(*tls.Config)
	if !c.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(t *tls.Config) { t.NextProtos = []string{"http/1.1"} })
	}

	// The webhook certificate is reloaded when it changes on disk.
	var webhookCertWatcher *certwatcher.CertWatcher
	webhookOpts := webhook.Options{Host: c.webhookHost, Port: c.webhookPort, TLSOpts: tlsOpts}
	if c.webhookCertPath != "" {
		var err error
		webhookCertWatcher, err = certwatcher.New(
			filepath.Join(c.webhookCertPath, c.webhookCertName), filepath.Join(c.webhookCertPath, c.webhookCertKey))
		if err != nil {
			return err
		}
		webhookOpts.TLSOpts = append(webhookOpts.TLSOpts, func(t *tls.Config) {
			t.GetCertificate = webhookCertWatcher.GetCertificate
		})
	}

	metricsOpts := metricsserver.Options{BindAddress: c.metricsAddr, SecureServing: c.secureMetrics, TLSOpts: tlsOpts}
	if c.secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	if c.metricsCertPath != "" {
		metricsOpts.CertDir, metricsOpts.CertName, metricsOpts.KeyName = c.metricsCertPath, c.metricsCertName, c.metricsCertKey
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOpts,
		WebhookServer:          webhook.NewServer(webhookOpts),
		HealthProbeBindAddress: c.probeAddr,
		LeaderElection:         c.enableLeaderElection,
		LeaderElectionID:       "manager.apikeys.dev",
		Cache: cacheOptions(c),
	})
	if err != nil {
		return err
	}
	if webhookCertWatcher != nil {
		if err := mgr.Add(webhookCertWatcher); err != nil {
			return err
		}
	}

	if c.enableController {
		rules, err := loadPolicy(c)
		if err != nil {
			return err
		}
		if err := (&controller.ApiKeyReconciler{
			Client:    mgr.GetClient(),
			APIReader: mgr.GetAPIReader(),
			Recorder:  mgr.GetEventRecorder("apikey-operator"),
			Policy:    rules,
		}).SetupWithManager(mgr); err != nil {
			return err
		}
		if c.enableAdmission {
			if err := webhookv1alpha1.SetupApiKeyWebhookWithManager(mgr, rules); err != nil {
				return err
			}
		}
	}
	if c.enableAuthServer {
		auth := authserver.NewServer(authserver.NewIndex(), authserver.Options{
			APIKeyHeader:       c.apiKeyHeader,
			UsageFlushInterval: c.usageFlushInterval,
		})
		if err := auth.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}

	setupLog.Info("Starting manager", "admission", c.enableController && c.enableAdmission, "controller", c.enableController, "authServer", c.enableAuthServer, "maxTTL", c.maxTTL)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// cacheOptions drops managedFields everywhere (nothing here reads them) and,
// for an auth-server-only replica, every field the index does not read.
func cacheOptions(c config) cache.Options {
	opts := cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
	if !c.enableController {
		opts.ByObject = authserver.CacheOptions()
	}
	return opts
}

// loadPolicy builds the rules the controller and the admission webhooks
// share, with the attestation key from its Secret.
func loadPolicy(c config) (*policy.Policy, error) {
	direct, err := client.New(ctrl.GetConfigOrDie(), client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, err := policy.LoadAttestationKey(ctx, direct, c.namespace, c.attestationKeySecret)
	if err != nil {
		return nil, err
	}
	return policy.New(c.maxTTL, strings.Split(c.forbiddenGroups, ","), key), nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
