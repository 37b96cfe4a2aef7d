package certs

import (
	"bytes"
	"context"
	"fmt"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"

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

// issuer keeps the CA Secret and the serving Secret holding a valid CA and
// serving certificate, and the webhook configurations trusting that CA. It
// runs on the leader only; each Secret is created, or rewritten whole with
// the UID and resourceVersion it read as preconditions (deleted and created
// again if it is immutable or of another type), so two issuers racing each
// other end with Secrets that both accept.
type issuer struct {
	// reader reads without a cache, so a Secret just replaced is not seen
	// stale and replaced again, and the CA key is never cached.
	reader client.Reader
	client client.Client
	opts   Options
	now    func() time.Time
}

func (r *issuer) setupWithManager(mgr ctrl.Manager, watched, caWatched cache.Cache) error {
	// Every event leads to the serving Secret, whose request stands for the
	// pair. Watching the configurations puts a bundle back at once when one
	// is applied again (a Helm upgrade, kubectl apply) and loses it.
	toTheSecret := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: r.opts.secretKey()}}
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("webhook-cert-issuer").
		WatchesRawSource(source.Kind[client.Object](watched, &corev1.Secret{}, toTheSecret)).
		WatchesRawSource(source.Kind[client.Object](caWatched, &corev1.Secret{}, toTheSecret))
	for _, config := range r.webhookConfigurations() {
		b = b.WatchesRawSource(source.Kind[client.Object](watched, config, toTheSecret))
	}
	return b.Complete(r)
}

// Reconcile issues or renews what is due, injects the CA bundle, and comes
// back when the next renewal is due.
func (r *issuer) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	caBundle, renewAt, err := r.ensureSecrets(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := r.injectCABundle(ctx, caBundle); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: max(renewAt.Sub(r.now()), time.Second)}, nil
}

// ensureSecrets returns the CA bundle the serving Secret holds once both
// Secrets hold a valid CA and serving certificate, and when one of them is
// next due.
func (r *issuer) ensureSecrets(ctx context.Context) ([]byte, time.Time, error) {
	caSecret, err := r.get(ctx, r.opts.caSecretKey())
	if err != nil {
		return nil, time.Time{}, err
	}
	serving, err := r.get(ctx, r.opts.secretKey())
	if err != nil {
		return nil, time.Time{}, err
	}
	next, err := renew(dataOf(caSecret), dataOf(serving), r.opts.hosts(), r.opts.lifetimes(), r.now())
	if err != nil {
		return nil, time.Time{}, err
	}

	// The CA Secret is written first. A crash before the serving Secret is
	// rewritten leaves a serving Secret with a certificate of the previous
	// CA (it was being replaced, perhaps because the serving Secret held
	// that CA's key); the next pass finds the new CA in its own Secret and
	// finishes. The other order could lose the CA key (a serving Secret
	// rewritten without it, then a crash before the CA Secret exists) and
	// force a new CA that the replicas' certificates do not chain to.
	if next.ca != nil {
		if err := r.replace(ctx, r.opts.caSecretKey(), caSecret, corev1.SecretTypeOpaque, next.ca); err != nil {
			return nil, time.Time{}, fmt.Errorf("writing the webhook CA Secret: %w", err)
		}
	}
	if next.serving != nil {
		if err := r.replace(ctx, r.opts.secretKey(), serving, corev1.SecretTypeTLS, next.serving); err != nil {
			return nil, time.Time{}, fmt.Errorf("writing the webhook certificate Secret: %w", err)
		}
	}
	if next.ca != nil || next.serving != nil {
		logf.FromContext(ctx).Info("Wrote the webhook certificate Secrets",
			"secret", r.opts.secretKey(), "caSecret", r.opts.caSecretKey(),
			"newCA", next.rotatedCA, "newCertificate", next.serving != nil,
			"renewAt", next.renewAt.UTC().Format(time.RFC3339))
	}
	return next.caBundle, next.renewAt, nil
}

// get reads a Secret uncached; nil when it does not exist.
func (r *issuer) get(ctx context.Context, key client.ObjectKey) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	if err := r.reader.Get(ctx, key, secret); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return secret, nil
}

func dataOf(secret *corev1.Secret) map[string][]byte {
	if secret == nil {
		return nil
	}
	return secret.Data
}

// replace puts a Secret holding data, and nothing else of anyone's, at key
// in place of current (nil when there is none).
func (r *issuer) replace(ctx context.Context, key client.ObjectKey, current *corev1.Secret,
	secretType corev1.SecretType, data map[string][]byte) error {
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name,
			Labels: map[string]string{apikeysv1alpha1.ManagedByLabel: apikeysv1alpha1.ManagedByValue},
		},
		Type: secretType,
		Data: data,
	}
	if current == nil {
		return r.client.Create(ctx, want)
	}
	// The UID and resourceVersion read make a replica that read an older
	// Secret fail here instead of overwriting what another replica just
	// issued.
	uid, version := current.UID, current.ResourceVersion
	if current.Type == secretType && (current.Immutable == nil || !*current.Immutable) {
		// Rewritten whole and in place: no moment passes without the
		// Secret, so a crash cannot lose the CA that the replicas'
		// certificates chain to, and its labels and annotations (a
		// last-applied-configuration holds old data) are dropped.
		want.UID, want.ResourceVersion = uid, version
		return r.client.Update(ctx, want)
	}
	// A Secret's type cannot change, nor an immutable one's data (a policy
	// engine may make every Secret immutable).
	if err := r.client.Delete(ctx, current, client.Preconditions{UID: &uid, ResourceVersion: &version}); err != nil {
		return err
	}
	return r.client.Create(ctx, want)
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
