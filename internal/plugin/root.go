// Package plugin is `kubectl apikey`: it creates ApiKeys, prints a key's
// one-time token, and lists, suspends, resumes, revokes and rotates keys. It
// takes kubectl's connection flags (--kubeconfig, --context, -n, --as, …)
// through cli-runtime, so it reaches the same cluster and namespace kubectl
// would.
package plugin

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/version"
)

// scheme holds the only kinds the plugin reads and writes: ApiKeys, Secrets,
// and the SelfSubjectReview that says who runs it.
var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(authenticationv1.AddToScheme(scheme))
	utilruntime.Must(apikeysv1alpha1.AddToScheme(scheme))
}

// pluginName is the binary's name, which kubectl runs for `kubectl apikey`.
const pluginName = "kubectl-apikey"

// Run executes the command line args and returns the process exit code. An
// error is printed to stderr as kubectl prints one, "error: …".
func Run(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	streams = terminalSafeStreams(streams)
	cmd := NewRootCommand(streams)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		// The exit code reports the failure even if stderr cannot.
		_, _ = fmt.Fprintf(streams.ErrOut, "error: %v\n", err)
		return 1
	}
	return 0
}

// root is what every subcommand shares: kubectl's connection flags and the
// streams to write to.
type root struct {
	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
}

// NewRootCommand returns `kubectl apikey` with all its subcommands.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	streams = terminalSafeStreams(streams)
	r := &root{flags: genericclioptions.NewConfigFlags(true), streams: streams}
	cmd := &cobra.Command{
		Use:   pluginName,
		Short: "Create and manage ApiKeys and read their one-time tokens",
		Long: `Create and manage ApiKeys (apikeys.dev/v1alpha1) and read their tokens.

The apikey-operator mints a token for each ApiKey, keeps only its hash, and
writes the raw token once into a Secret. This plugin creates keys, prints
the token from that Secret (get-token), and lists, suspends, resumes,
revokes and rotates keys. It takes kubectl's connection flags, so --kubeconfig,
--context and --namespace/-n mean what they mean to kubectl.`,
		Example: `  # Create a key for CI, wait until it is Ready, then read its token once
  kubectl apikey create ci-deployer --scopes deployments:write,images:read --ttl 720h
  TOKEN=$(kubectl apikey get-token ci-deployer --delete)

  # Replace its token, keeping the old one working for an hour
  kubectl apikey rotate ci-deployer --grace 1h --wait

  # See every key in the cluster
  kubectl apikey list -A`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl apikey"},
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version prints what `kubectl apikey version` prints.
		Version: version.Get().Version,
	}
	// Declared here so that cobra gives it no -v, which kubectl users know
	// as the log level.
	cmd.Flags().Bool("version", false, "Print the plugin's version, commit and build date")
	cmd.SetVersionTemplate(version.Get().Text(pluginName))
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	r.flags.AddFlags(cmd.PersistentFlags())

	cmd.AddCommand(
		newCreateCommand(r),
		newGetTokenCommand(r),
		newListCommand(r),
		newSuspendCommand(r, true),
		newSuspendCommand(r, false),
		newRevokeCommand(r),
		newRotateCommand(r),
		newVersionCommand(r),
	)
	return cmd
}

// session is a connection to the cluster the flags name, and the namespace
// a command acts in.
type session struct {
	client    client.WithWatch
	namespace string
	streams   genericiooptions.IOStreams
}

// connect builds a client from kubectl's flags and resolves the namespace:
// --namespace, else the context's namespace, else "default".
func (r *root) connect() (*session, error) {
	cfg, err := r.flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	// Server warnings go to stderr as kubectl shows them, never to stdout
	// where a token may be printed.
	cfg.WarningHandler = rest.NewWarningWriter(r.streams.ErrOut, rest.WarningWriterOptions{Deduplicate: true})
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, explain(err)
	}
	ns, err := r.namespace()
	if err != nil {
		return nil, err
	}
	return &session{client: c, namespace: ns, streams: r.streams}, nil
}

// namespace is the namespace a command acts in: --namespace, else the
// context's namespace, else "default". It reads the kubeconfig only and
// never contacts the cluster.
func (r *root) namespace() (string, error) {
	ns, _, err := r.flags.ToRawKubeConfigLoader().Namespace()
	return ns, err
}

// explain turns errors a user can fix without reading client-go into ones
// that say what to do.
func explain(err error) error {
	if utilnet.IsConnectionRefused(err) {
		return fmt.Errorf("cannot reach the Kubernetes API server: check --kubeconfig, --context or KUBECONFIG: %w", err)
	}
	if meta.IsNoMatchError(err) {
		return fmt.Errorf("the ApiKey API (%s) is not served by this cluster: "+
			"install the apikey-operator CRDs first (make install, or kubectl apply -f dist/install.yaml): %w",
			apikeysv1alpha1.GroupVersion, err)
	}
	return err
}

// oneName is the Args check of every command that acts on one ApiKey.
func oneName(cmd *cobra.Command, args []string) error {
	if len(args) == 1 && args[0] != "" {
		return nil
	}
	return fmt.Errorf("%s needs exactly one ApiKey NAME, got %d arguments; see 'kubectl apikey %s --help'",
		cmd.Name(), len(args), cmd.Name())
}

// terminalSafe writes through to w with the characters that drive a
// terminal escaped: ESC and CR as kubectl escapes the cells it prints, and
// the C1 controls (U+0080 to U+009F, among them a one-character CSI and OSC
// that some terminals obey), which kubectl leaves, as \u009b. Much of what
// the plugin prints comes from objects others may write (status, whose
// writers include anyone holding apikeys/status, and condition messages),
// and an escape sequence in them must not reach the terminal of whoever
// lists the keys. A token has none of them.
type terminalSafe struct{ w io.Writer }

// c1Escaper spells each C1 control as \uXXXX.
var c1Escaper = func() *strings.Replacer {
	var pairs []string
	for r := rune(0x80); r <= 0x9f; r++ {
		pairs = append(pairs, string(r), fmt.Sprintf(`\u%04x`, r))
	}
	return strings.NewReplacer(pairs...)
}()

func (t terminalSafe) Write(p []byte) (int, error) {
	if err := printers.WriteEscaped(t.w, c1Escaper.Replace(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// terminalSafeStreams wraps the output streams in terminalSafe, once.
func terminalSafeStreams(streams genericiooptions.IOStreams) genericiooptions.IOStreams {
	for _, w := range []*io.Writer{&streams.Out, &streams.ErrOut} {
		if _, wrapped := (*w).(terminalSafe); !wrapped && *w != nil {
			*w = terminalSafe{*w}
		}
	}
	return streams
}
