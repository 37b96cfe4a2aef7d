// Package testenv is the test control plane the suites, the tests that start
// one of their own and the hack/ programs share: the scheme they speak, where
// the repository keeps the CRDs and the admission webhooks, and an
// envtest.Environment built from them. Only tests and hack/ import it.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// Scheme is every built-in kind client-go knows and ours: the scheme of
// every client and manager of the tests. Nothing may add to it.
var Scheme = func() *apiruntime.Scheme {
	scheme := apiruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apikeysv1alpha1.AddToScheme(scheme))
	return scheme
}()

// Log sends controller-runtime's log to w in zap's development format and
// returns that logger; opts add to the format, as zap.Level keeps more.
func Log(w io.Writer, opts ...zap.Opts) logr.Logger {
	logger := zap.New(append([]zap.Opts{zap.WriteTo(w), zap.UseDevMode(true)}, opts...)...)
	logf.SetLogger(logger)
	return logger
}

// Root is the repository root, whatever the working directory: a suite
// runs in its package's directory, a hack/ program in the root.
func Root() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root
		}
	}
	// Built with -trimpath: walk up from the working directory.
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "config", "crd", "bases")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// CRDDir holds the CRDs `make manifests` generates.
func CRDDir() string { return filepath.Join(Root(), "config", "crd", "bases") }

// WebhookDir holds the admission webhook configurations.
func WebhookDir() string { return filepath.Join(Root(), "config", "webhook") }

// Options are what the control planes of the suites differ on.
type Options struct {
	// AssetsDir holds kube-apiserver, etcd and kubectl; empty means
	// utils.ControlPlaneDir (KUBEBUILDER_ASSETS, or the newest bin/k8s).
	AssetsDir string
	// Webhooks registers config/webhook's admission webhooks with the API
	// server, to be served on the Environment's WebhookInstallOptions.
	Webhooks bool
	// WebhookHost is where those webhooks are served; empty is envtest's
	// default.
	WebhookHost string
	// APIServerFlags are extra kube-apiserver flags, name (without the
	// dashes) to value.
	APIServerFlags map[string]string
}

// New is a control plane, not yet started, that installs the CRDs of
// config/crd/bases and, with o.Webhooks, the admission webhooks.
func New(o Options) (*envtest.Environment, error) {
	assets := o.AssetsDir
	if assets == "" {
		var err error
		if assets, err = utils.ControlPlaneDir(); err != nil {
			return nil, err
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{CRDDir()},
		ErrorIfCRDPathMissing: true,
	}
	if o.Webhooks {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths:            []string{WebhookDir()},
			LocalServingHost: o.WebhookHost,
		}
	}
	for name, value := range o.APIServerFlags {
		env.ControlPlane.GetAPIServer().Configure().Set(name, value)
	}
	return env, nil
}

// Start starts the control plane of New(o) and returns it, its Config the
// administrator's (system:masters), with a client of that administrator.
func Start(o Options) (*envtest.Environment, client.Client, error) {
	env, err := New(o)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, errors.Join(err, env.Stop())
	}
	admin, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, nil, errors.Join(err, env.Stop())
	}
	return env, admin, nil
}

// TokenWebhookFlags writes into dir the kubeconfig of an auth server whose
// /tokenreview is at url, its certificate signed by ca, and returns the
// kube-apiserver flags that make it the token authenticator, speaking
// TokenReview version and caching answers for cacheTTL.
func TokenWebhookFlags(dir, url string, ca []byte, version string, cacheTTL time.Duration) (map[string]string, error) {
	path := filepath.Join(dir, "token-webhook-"+version+".kubeconfig")
	if err := os.WriteFile(path, []byte(utils.TokenWebhookKubeconfig(url, ca)), 0o600); err != nil {
		return nil, err
	}
	return map[string]string{
		"authentication-token-webhook-config-file": path,
		"authentication-token-webhook-version":     version,
		"authentication-token-webhook-cache-ttl":   cacheTTL.String(),
	}, nil
}

// InstallDefaults creates the defaults MutatingAdmissionPolicy and its
// binding as rule renders them, and returns once kube-apiserver applies
// them (AwaitDefaults).
func InstallDefaults(ctx context.Context, c client.Client, rule *policy.DefaultsRule, namespace string) error {
	if err := errors.Join(c.Create(ctx, rule.Policy), c.Create(ctx, rule.Binding)); err != nil {
		return err
	}
	return AwaitDefaults(ctx, c, namespace)
}

// AwaitDefaults returns once a dry-run create of an ApiKey in namespace
// comes back with an owner: the defaults policy is applied. kube-apiserver
// learns of a new policy through an informer, and of a new CRD's schema,
// which the policy needs, by rereading its OpenAPI every 5 s; until then it
// answers such a create with 503 ("Resource kind … not found").
func AwaitDefaults(ctx context.Context, c client.Client, namespace string) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		probe := &apikeysv1alpha1.ApiKey{}
		probe.Namespace, probe.GenerateName = namespace, "probe-"
		switch last = c.Create(ctx, probe, client.DryRunAll); {
		case apierrors.IsServiceUnavailable(last):
			return false, nil
		case last != nil:
			return false, last
		}
		return probe.Spec.Owner != nil, nil
	})
	if err != nil && last != nil && !errors.Is(err, last) {
		return fmt.Errorf("%w (last: %w)", err, last)
	}
	return err
}

// InstallOwnerRule creates p's owner policy and its binding (after alter,
// if given), replacing any earlier ones, and returns what deletes them. For
// the rule as p renders it, it returns once p shows it in force and a key
// created from then on falls after it (timestamps have whole seconds); an
// altered rule never counts, so it returns once the objects exist.
func InstallOwnerRule(ctx context.Context, c client.Client, p *policy.Policy, alter func(*policy.OwnerRule)) (
	remove func(context.Context) error, err error) {
	rule, err := p.OwnerRule()
	if err != nil {
		return nil, err
	}
	if alter != nil {
		alter(rule)
	}
	objs := []client.Object{rule.Binding, rule.Policy}
	remove = func(ctx context.Context) error {
		errs := make([]error, 0, len(objs))
		for _, obj := range objs {
			errs = append(errs, client.IgnoreNotFound(c.Delete(ctx, obj)))
		}
		return errors.Join(errs...)
	}
	if err := remove(ctx); err != nil {
		return remove, err
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, obj := range objs {
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)); !apierrors.IsNotFound(err) {
				return false, client.IgnoreNotFound(err)
			}
		}
		return true, nil
	})
	if err != nil {
		return remove, fmt.Errorf("removing the earlier owner rule: %w", err)
	}
	if err := errors.Join(c.Create(ctx, rule.Policy), c.Create(ctx, rule.Binding)); err != nil || alter != nil {
		return remove, err
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var since time.Time
		since, last = p.OwnerRuleInForceSince(ctx, c)
		return last == nil && time.Now().Truncate(time.Second).After(since), nil
	})
	if err != nil && last != nil {
		err = fmt.Errorf("%w (last: %w)", err, last)
	}
	return remove, err
}

// ControllerManager writes into dir a kubeconfig for kube-controller-manager
// (a system:masters user of env) and returns its binary, beside
// kube-apiserver's, and the flags that run only controllers, with no leader
// election and no serving port.
func ControllerManager(env *envtest.Environment, dir string, controllers ...string) (path string, args []string, err error) {
	user, err := env.AddUser(envtest.User{Name: "system:kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return "", nil, err
	}
	kubeconfigPath := filepath.Join(dir, "kube-controller-manager.kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return "", nil, err
	}
	path = filepath.Join(env.BinaryAssetsDirectory, "kube-controller-manager")
	if _, err := os.Stat(path); err != nil {
		return "", nil, fmt.Errorf("no kube-controller-manager beside kube-apiserver (run `make e2e-tools`): %w", err)
	}
	return path, []string{
		"--kubeconfig=" + kubeconfigPath,
		"--controllers=" + strings.Join(controllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
	}, nil
}
