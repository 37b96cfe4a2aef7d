package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// installer writes the serving certificate from the Secret to the webhook
// server's directory, on every replica; the server's certificate watcher
// picks up each change.
type installer struct {
	cache     client.Reader
	opts      Options
	installed chan struct{}
	once      sync.Once
}

func (r *installer) setupWithManager(mgr ctrl.Manager, watched cache.Cache) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("webhook-cert-installer").
		// Every replica installs, one Secret event at a time.
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 1}).
		WatchesRawSource(source.Kind(watched, &corev1.Secret{}, &handler.TypedEnqueueRequestForObject[*corev1.Secret]{})).
		Complete(r)
}

// Reconcile installs the Secret's certificate. A missing or malformed Secret
// leaves the files as they are: the issuer replaces it, and that is the next
// event.
func (r *installer) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	secret := &corev1.Secret{}
	if err := r.cache.Get(ctx, r.opts.secretKey(), secret); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	certPEM, keyPEM := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		logf.FromContext(ctx).Info("The webhook certificate Secret holds no usable certificate yet", "secret", r.opts.secretKey())
		return reconcile.Result{}, nil
	}
	if err := install(r.opts.CertDir, map[string][]byte{r.opts.CertName: certPEM, r.opts.KeyName: keyPEM}); err != nil {
		return reconcile.Result{}, err
	}
	r.once.Do(func() {
		logf.FromContext(ctx).Info("Installed the webhook certificate", "secret", r.opts.secretKey(), "dir", r.opts.CertDir)
		close(r.installed)
	})
	return reconcile.Result{}, nil
}

// dataLink names the link to the directory holding the current files.
const dataLink = "..data"

// install puts files into dir the way kubelet updates a Secret volume: they
// are written to a new hidden directory, the ..data link swings over to it
// in one rename, and each name is a link through ..data. A reader never sees
// a new key beside an old certificate, and the watcher of a removed file
// hears of the change.
func install(dir string, files map[string][]byte) error {
	if installed(dir, files) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	version, err := os.MkdirTemp(dir, "..cert-")
	if err != nil {
		return err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(version, name), content, 0o600); err != nil {
			_ = os.RemoveAll(version)
			return err
		}
	}
	previous, _ := os.Readlink(filepath.Join(dir, dataLink))
	if err := replaceWithLink(filepath.Join(dir, dataLink), filepath.Base(version)); err != nil {
		_ = os.RemoveAll(version)
		return err
	}
	for name := range files {
		target := filepath.Join(dataLink, name)
		if current, err := os.Readlink(filepath.Join(dir, name)); err == nil && current == target {
			continue
		}
		if err := replaceWithLink(filepath.Join(dir, name), target); err != nil {
			return err
		}
	}
	if previous != "" && previous != filepath.Base(version) {
		return os.RemoveAll(filepath.Join(dir, previous))
	}
	return nil
}

// installed reports whether dir already holds files.
func installed(dir string, files map[string][]byte) bool {
	for name, content := range files {
		if current, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(current, content) {
			return false
		}
	}
	return true
}

// replaceWithLink makes path a symbolic link to target, atomically.
func replaceWithLink(path, target string) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
