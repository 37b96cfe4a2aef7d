// Package certs gives the webhook server a certificate without cert-manager:
// the operator keeps its own CA in one Secret and the serving certificate in
// another, renews them before they expire, injects the CA into the admission
// webhook configurations, and every replica writes the certificate from the
// serving Secret to the webhook server's directory before the server starts
// listening. Only the issuer reads the CA's Secret: a replica that merely
// serves, and whoever owns its pod, never holds a key that could sign a
// certificate kube-apiserver trusts.
package certs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;delete

// Options say where the certificate lives, whom it names and who trusts it.
type Options struct {
	// Namespace and SecretName locate the Secret holding the serving
	// certificate, its key and the CA bundle (tls.crt, tls.key, ca.crt);
	// every replica reads it, the issuer creates it when missing.
	Namespace, SecretName string
	// CASecretName names the Secret in Namespace holding the CA certificate
	// and its private key (ca.crt, ca.key). Only the issuer reads it; it is
	// required with Issue and must differ from SecretName.
	CASecretName string
	// Service is the webhook Service: the certificate covers
	// <Service>.<Namespace>.svc and <Service>.<Namespace>.svc.cluster.local.
	Service string
	// ExtraHosts are further DNS names or IP addresses the certificate
	// covers, such as 127.0.0.1 for a server that a local API server calls.
	ExtraHosts []string
	// MutatingWebhookConfiguration and ValidatingWebhookConfiguration name
	// the configurations whose every webhook gets the CA bundle; empty skips.
	MutatingWebhookConfiguration, ValidatingWebhookConfiguration string
	// CertDir, CertName and KeyName are where the webhook server reads its
	// certificate. Names default to tls.crt and tls.key.
	CertDir, CertName, KeyName string
	// Issue makes this replica create and renew the Secret and inject the CA,
	// while it holds the leader lease. Without it the replica only reads.
	Issue bool
	// CAValidity and CertValidity are how long a new CA and a new serving
	// certificate live (default 10 years and 1 year); each is replaced
	// RenewBefore (default 90 days) ahead of its expiry.
	CAValidity, CertValidity, RenewBefore time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.CertName == "" {
		o.CertName = corev1.TLSCertKey
	}
	if o.KeyName == "" {
		o.KeyName = corev1.TLSPrivateKeyKey
	}
	if o.CAValidity == 0 {
		o.CAValidity = 10 * 365 * 24 * time.Hour
	}
	if o.CertValidity == 0 {
		o.CertValidity = 365 * 24 * time.Hour
	}
	if o.RenewBefore == 0 {
		o.RenewBefore = 90 * 24 * time.Hour
	}
	switch {
	case o.Namespace == "" || o.SecretName == "" || o.Service == "":
		return o, errors.New("certs: namespace, secret and service are required")
	case o.Issue && o.CASecretName == "":
		return o, errors.New("certs: the issuer needs a Secret for the CA")
	case o.CASecretName == o.SecretName:
		return o, errors.New("certs: the CA must have a Secret of its own, apart from the serving certificate")
	case o.CertDir == "":
		return o, errors.New("certs: a certificate directory is required")
	case o.RenewBefore >= o.CertValidity || o.CertValidity > o.CAValidity:
		return o, errors.New("certs: renewal must come before the serving certificate expires, which must not outlive the CA")
	}
	return o, nil
}

func (o Options) secretKey() types.NamespacedName {
	return types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName}
}

func (o Options) caSecretKey() types.NamespacedName {
	return types.NamespacedName{Namespace: o.Namespace, Name: o.CASecretName}
}

// hosts are the names and addresses the serving certificate covers, the
// Service's DNS name first.
func (o Options) hosts() []string {
	svc := o.Service + "." + o.Namespace + ".svc"
	return append([]string{svc, svc + ".cluster.local"}, o.ExtraHosts...)
}

func (o Options) lifetimes() lifetimes {
	return lifetimes{ca: o.CAValidity, serving: o.CertValidity, renewBefore: o.RenewBefore}
}

// WebhookServer is a webhook server that starts listening only once Setup
// has put the certificate on disk, so no caller ever meets a server without
// one. Build the manager with it, then call Setup.
type WebhookServer struct {
	webhook.Server
	installed <-chan struct{}
}

// NewWebhookServer returns a webhook server for o that waits for Setup.
func NewWebhookServer(o webhook.Options) *WebhookServer {
	return &WebhookServer{Server: webhook.NewServer(o)}
}

// Start waits until the certificate is on disk, then serves until ctx ends.
func (s *WebhookServer) Start(ctx context.Context) error {
	if s.installed == nil {
		return errors.New("certs: the webhook server has no certificate source: call certs.Setup")
	}
	select {
	case <-s.installed:
		return s.Server.Start(ctx)
	case <-ctx.Done():
		return nil
	}
}

// Setup adds to mgr what keeps the webhook certificate: on every replica, a
// controller writing it from the serving Secret to o.CertDir; with o.Issue,
// a leader-elected controller issuing, renewing and injecting it. mgr's
// webhook server must come from NewWebhookServer. The returned channel
// closes once the certificate is on disk, and from then on the server
// listens.
func Setup(mgr manager.Manager, o Options) (<-chan struct{}, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	server, ok := mgr.GetWebhookServer().(*WebhookServer)
	if !ok {
		return nil, errors.New("certs: the manager's webhook server must come from certs.NewWebhookServer")
	}
	watched, err := addCache(mgr, o)
	if err != nil {
		return nil, err
	}
	installed := make(chan struct{})
	server.installed = installed
	if err := (&installer{cache: watched, opts: o, installed: installed}).setupWithManager(mgr, watched); err != nil {
		return nil, err
	}
	if o.Issue {
		caWatched, err := addCAWatch(mgr, o)
		if err != nil {
			return nil, err
		}
		if err := (&issuer{
			reader: mgr.GetAPIReader(), client: mgr.GetClient(), opts: o, now: time.Now,
		}).setupWithManager(mgr, watched, caWatched); err != nil {
			return nil, err
		}
	}
	return installed, nil
}

// ReadyzCheck fails until installed closes: a replica without its
// certificate must not receive traffic.
func ReadyzCheck(installed <-chan struct{}) healthz.Checker {
	return func(*http.Request) error {
		select {
		case <-installed:
			return nil
		default:
			return errors.New("the webhook certificate is not installed yet")
		}
	}
}

// ownCache is a cache that watches only the serving Secret and the two
// webhook configurations, by name, so that a replica holds no other Secret.
// It runs on every replica, leader or not.
type ownCache struct{ cache.Cache }

// GetCache lets the manager start it with the other caches and wait for it.
func (c ownCache) GetCache() cache.Cache { return c.Cache }

func named(name string) fields.Selector { return fields.OneTermEqualSelector("metadata.name", name) }

func addCache(mgr manager.Manager, o Options) (cache.Cache, error) {
	byObject := map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}, Field: named(o.SecretName)},
	}
	if o.MutatingWebhookConfiguration != "" {
		byObject[&admissionregistrationv1.MutatingWebhookConfiguration{}] = cache.ByObject{Field: named(o.MutatingWebhookConfiguration)}
	}
	if o.ValidatingWebhookConfiguration != "" {
		byObject[&admissionregistrationv1.ValidatingWebhookConfiguration{}] = cache.ByObject{Field: named(o.ValidatingWebhookConfiguration)}
	}
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:           mgr.GetScheme(),
		Mapper:           mgr.GetRESTMapper(),
		ByObject:         byObject,
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return c, mgr.Add(ownCache{c})
}

// addCAWatch adds a cache that watches the CA Secret by name, for replicas
// that issue: a CA Secret deleted or changed is put right at once. It keeps
// no data, so the CA key is in memory only while the issuer, which reads the
// Secret uncached, works with it.
func addCAWatch(mgr manager.Manager, o Options) (cache.Cache, error) {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(),
		Mapper: mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {
				Namespaces: map[string]cache.Config{o.Namespace: {}},
				Field:      named(o.CASecretName),
				Transform:  withoutData,
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return c, mgr.Add(ownCache{c})
}

// withoutData drops a Secret's data, managed fields, labels and
// annotations: the watch only says that the Secret changed, and a CA Secret
// once written by kubectl apply holds its key in an annotation
// (kubectl.kubernetes.io/last-applied-configuration).
func withoutData(obj any) (any, error) {
	if s, ok := obj.(*corev1.Secret); ok {
		s.Data, s.StringData, s.ManagedFields = nil, nil, nil
		s.Labels, s.Annotations = nil, nil
	}
	return obj, nil
}
