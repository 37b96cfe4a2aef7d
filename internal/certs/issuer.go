package certs

import (
	"bytes"
	"context"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// issuer keeps the Secret holding a valid CA and serving certificate and the
// webhook configurations trusting that CA. It runs on the leader only; the
// Secret is created, or deleted and created again, never updated, so two
// issuers racing each other end with one Secret that both accept.
type issuer struct {
	// reader reads without a cache, so a Secret just replaced is not seen
	// stale and replaced again.
	reader client.Reader
	client client.Client
	opts   Options
	now    func() time.Time
}

func (r *issuer) setupWithManager(mgr ctrl.Manager, watched cache.Cache) error {
	// Every event leads to the one Secret. Watching the configurations puts
	// a bundle back at once when one is applied again (a Helm upgrade,
	// kubectl apply) and loses it.
	toTheSecret := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: r.opts.secretKey()}}
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("webhook-cert-issuer").
		WatchesRawSource(source.Kind[client.Object](watched, &corev1.Secret{}, toTheSecret))
	for _, config := range r.webhookConfigurations() {
		b = b.WatchesRawSource(source.Kind[client.Object](watched, config, toTheSecret))
	}
	return b.Complete(r)
}

// Reconcile issues or renews what is due, injects the CA bundle, and comes
// back when the next renewal is due.
func (r *issuer) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	caBundle, renewAt, err := r.ensureSecret(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := r.injectCABundle(ctx, caBundle); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: max(renewAt.Sub(r.now()), time.Second)}, nil
}

// ensureSecret returns the CA bundle the Secret holds once it holds a valid
// CA and serving certificate, and when one of them is next due.
func (r *issuer) ensureSecret(ctx context.Context) ([]byte, time.Time, error) {
	key := r.opts.secretKey()
	current := &corev1.Secret{}
	if err := r.reader.Get(ctx, key, current); apierrors.IsNotFound(err) {
		current = nil
	} else if err != nil {
		return nil, time.Time{}, err
	}
	var data map[string][]byte
	if current != nil {
		data = current.Data
	}
	next, err := renew(data, r.opts.hosts(), r.opts.lifetimes(), r.now())
	if err != nil {
		return nil, time.Time{}, err
	}
	if next.data == nil {
		return data[caBundleKey], next.renewAt, nil
	}

	if current != nil {
		// The preconditions make a replica that read an older Secret fail
		// here instead of deleting what another replica just issued.
		uid, version := current.UID, current.ResourceVersion
		if err := r.client.Delete(ctx, current, client.Preconditions{UID: &uid, ResourceVersion: &version}); err != nil {
			return nil, time.Time{}, fmt.Errorf("replacing the webhook certificate Secret: %w", err)
		}
	}
	if err := r.client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "apikey-operator"},
		},
		Type: corev1.SecretTypeTLS,
		Data: next.data,
	}); err != nil {
		return nil, time.Time{}, fmt.Errorf("creating the webhook certificate Secret: %w", err)
	}
	logf.FromContext(ctx).Info("Issued the webhook certificate",
		"secret", key, "newCA", next.rotatedCA, "renewAt", next.renewAt.UTC().Format(time.RFC3339))
	return next.data[caBundleKey], next.renewAt, nil
}

// webhookConfigurations are the configurations to inject into, empty and
// named.
func (r *issuer) webhookConfigurations() []client.Object {
	var configs []client.Object
	if name := r.opts.MutatingWebhookConfiguration; name != "" {
		configs = append(configs, &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	if name := r.opts.ValidatingWebhookConfiguration; name != "" {
		configs = append(configs, &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	return configs
}

// injectCABundle sets caBundle on every webhook of both configurations,
// patching only the bundles, and skips a configuration that does not exist.
func (r *issuer) injectCABundle(ctx context.Context, caBundle []byte) error {
	for _, config := range r.webhookConfigurations() {
		if err := r.reader.Get(ctx, client.ObjectKeyFromObject(config), config); apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return err
		}
		before := config.DeepCopyObject().(client.Object)
		bundles := caBundles(config)
		changed := false
		for _, bundle := range bundles {
			if !bytes.Equal(*bundle, caBundle) {
				*bundle, changed = caBundle, true
			}
		}
		if !changed {
			continue
		}
		if err := r.client.Patch(ctx, config, client.StrategicMergeFrom(before)); err != nil {
			return fmt.Errorf("injecting the CA bundle into %s: %w", config.GetName(), err)
		}
		logf.FromContext(ctx).Info("Injected the webhook CA bundle", "configuration", config.GetName(), "webhooks", len(bundles))
	}
	return nil
}

// caBundles points at the caBundle of every webhook in config.
func caBundles(config client.Object) []*[]byte {
	var out []*[]byte
	switch c := config.(type) {
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		for i := range c.Webhooks {
			out = append(out, &c.Webhooks[i].ClientConfig.CABundle)
		}
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		for i := range c.Webhooks {
			out = append(out, &c.Webhooks[i].ClientConfig.CABundle)
		}
	}
	return out
}
