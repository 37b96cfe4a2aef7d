package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// createOptions are the flags of `kubectl apikey create`.
type createOptions struct {
	scopes        []string
	audiences     []string
	ttl           time.Duration
	expiresAt     string
	description   string
	prefix        string
	ownerIdentity bool
	secretName    string
	wait          bool
	timeout       time.Duration
	dryRun        string
	output        string
}

// The --dry-run values, kubectl's.
const (
	dryRunNone   = "none"
	dryRunClient = "client"
	dryRunServer = "server"
	// dryRunBare is what a bare --dry-run sets, to refuse it as kubectl does.
	dryRunBare = "unchanged"
)

func newCreateCommand(r *root) *cobra.Command {
	o := &createOptions{}
	cmd := &cobra.Command{
		Use:   "create NAME [--scopes a,b] [--ttl 720h | --expires-at TIME] [flags]",
		Short: "Create an ApiKey and wait until its token is delivered",
		Long: `Create an ApiKey and wait until the operator has issued its token.

The token is never printed by this command: the operator writes it once into
a Secret, and 'kubectl apikey get-token NAME' prints it from there. create
prints the key's user, token hint, expiry and Secret once the key is Ready.

If the operator refuses the spec (the key is Stalled, e.g. a --ttl beyond the
operator's --max-ttl), create prints the reason and exits non-zero; the
ApiKey stays, without a token, until you fix or revoke it.

--ttl takes a Go duration (720h is 30 days); --expires-at an RFC 3339 time.
Without either, the key expires after the operator's --max-ttl.

--dry-run=client -o yaml prints the ApiKey the flags describe, without
contacting the cluster, as a manifest to commit to Git (like flux create
--export); --dry-run=server has the API server and its admission check it
without storing it. With -o and no dry run, create prints the key as the
cluster has it (once it is Ready, with --wait) instead of the summary.`,
		Example: `  # A key that is its own user, apikey:<namespace>:ci-deployer, for 30 days
  kubectl apikey create ci-deployer --scopes deployments:write,images:read --ttl 720h

  # A personal access token that authenticates as you, until a fixed date
  kubectl apikey create my-pat --owner-identity --prefix ro_pat --expires-at 2027-01-01T00:00:00Z

  # Create in another namespace and do not wait for the operator
  kubectl apikey create billing -n team-b --audiences billing-api --wait=false

  # Write the manifest for Git instead of creating the key
  kubectl apikey create billing -n team-b --scopes invoices:read --ttl 720h --dry-run=client -o yaml > billing.yaml`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			if o.dryRun == dryRunClient {
				return o.printManifest(r, args[0])
			}
			s, err := r.connect()
			if err != nil {
				return err
			}
			return s.create(cmd.Context(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.scopes, "scopes", nil, "Permissions the key carries, comma-separated or repeated (spec.scopes)")
	f.StringSliceVar(&o.audiences, "audiences", nil, "Audiences the key is limited to, comma-separated or repeated (spec.audiences)")
	f.DurationVar(&o.ttl, "ttl", 0, "How long the key works after its token is issued, e.g. 720h (spec.ttl)")
	f.StringVar(&o.expiresAt, "expires-at", "", "RFC 3339 time the key stops working, e.g. 2027-01-01T00:00:00Z (spec.expiresAt)")
	f.StringVar(&o.description, "description", "", "Free text shown to people managing the key (spec.description)")
	f.StringVar(&o.prefix, "prefix", "", "Token prefix, e.g. ro_pat; the operator's default is ak (spec.prefix)")
	f.BoolVar(&o.ownerIdentity, "owner-identity", false,
		"Make a personal access token that authenticates as you (spec.identity: Owner); needs the operator's admission webhook")
	f.StringVar(&o.secretName, "secret-name", "", "Secret that receives the token; default NAME-token (spec.secret.name)")
	f.BoolVar(&o.wait, "wait", true, "Wait until the key is Ready (or Stalled)")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "How long to wait for the key to become Ready")
	f.StringVar(&o.dryRun, "dry-run", dryRunNone,
		`"client" prints the ApiKey without contacting the cluster; "server" has the API server check it without storing it; "none" creates it`)
	f.Lookup("dry-run").NoOptDefVal = dryRunBare
	f.StringVarP(&o.output, "output", "o", "", "Output format: json, yaml or name, printed instead of the summary")
	cmd.MarkFlagsMutuallyExclusive("ttl", "expires-at")
	return cmd
}

// validate checks the flags that need no namespace before anything is sent.
func (o *createOptions) validate() error {
	switch o.dryRun {
	case dryRunNone, dryRunClient, dryRunServer:
	case dryRunBare:
		return errors.New(`--dry-run needs a value: --dry-run=client or --dry-run=server ("none" creates the key)`)
	default:
		return fmt.Errorf("unknown --dry-run value %q: use none, client or server", o.dryRun)
	}
	if o.output != "" {
		return checkOutput(o.output, outputJSON, outputYAML, outputName)
	}
	return nil
}

// printManifest prints the ApiKey the flags describe without contacting
// the cluster: apiVersion, kind, name, namespace and spec, nothing a server
// sets, so it can be committed to Git and applied later.
func (o *createOptions) printManifest(r *root, name string) error {
	ns, err := r.namespace()
	if err != nil {
		return err
	}
	key, err := o.apiKey(ns, name)
	if err != nil {
		return err
	}
	return o.report(r.streams.Out, key, "(dry run)")
}

// report prints key in the -o format or, without -o, the one line kubectl
// prints for a dry run, e.g. "apikey/ci created in namespace team-a (dry run)".
func (o *createOptions) report(out io.Writer, key *apikeysv1alpha1.ApiKey, note string) error {
	if o.output != "" {
		return printKey(out, o.output, key)
	}
	_, err := fmt.Fprintf(out, "apikey/%s created in namespace %s %s\n", key.Name, key.Namespace, note)
	return err
}

// apiKey is the ApiKey the flags describe.
func (o *createOptions) apiKey(namespace, name string) (*apikeysv1alpha1.ApiKey, error) {
	key := &apikeysv1alpha1.ApiKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: apikeysv1alpha1.ApiKeySpec{
			Description: o.description,
			Scopes:      o.scopes,
			Audiences:   o.audiences,
			Prefix:      o.prefix,
			Secret:      apikeysv1alpha1.SecretTemplate{Name: o.secretName},
		},
	}
	if o.ownerIdentity {
		key.Spec.Identity = apikeysv1alpha1.IdentityOwner
	}
	if o.ttl < 0 {
		return nil, fmt.Errorf("--ttl must be positive, e.g. 720h for 30 days; got %s", o.ttl)
	}
	if o.ttl > 0 {
		key.Spec.TTL = &metav1.Duration{Duration: o.ttl}
	}
	if o.expiresAt != "" {
		t, err := time.Parse(time.RFC3339, o.expiresAt)
		if err != nil {
			return nil, fmt.Errorf("--expires-at must be an RFC 3339 time such as 2027-01-01T00:00:00Z: %w", err)
		}
		key.Spec.ExpiresAt = &metav1.Time{Time: t}
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("--timeout must be positive, e.g. 60s; got %s", o.timeout)
	}
	return key, nil
}

// create creates the key and, with --wait, reports it once the operator has
// issued its token or given up on it. The token itself is never read here.
func (s *session) create(ctx context.Context, name string, o *createOptions) error {
	key, err := o.apiKey(s.namespace, name)
	if err != nil {
		return err
	}
	var opts []client.CreateOption
	if o.dryRun == dryRunServer {
		opts = append(opts, client.DryRunAll)
	}
	if err := s.client.Create(ctx, key, opts...); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apikey %q already exists in namespace %q: pick another name, or revoke it first with 'kubectl apikey revoke %s %s'",
				name, s.namespace, name, s.nsFlag())
		}
		return explain(err)
	}
	out := s.streams.Out
	if o.dryRun == dryRunServer {
		// key is the server's answer: what it would have stored.
		return o.report(out, key, "(server dry run)")
	}
	if !o.wait && o.output != "" {
		return printKey(out, o.output, key)
	}
	if !o.wait {
		_, err := fmt.Fprintf(out, "apikey/%s created in namespace %s.\n"+
			"The operator issues its token shortly; check with 'kubectl get apikey %s %s',\n"+
			"then print the token with:\n  kubectl apikey get-token %s %s\n",
			name, s.namespace, name, s.nsFlag(), name, s.nsFlag())
		return err
	}

	last, err := s.waitForIssued(ctx, name, o.timeout)
	if err != nil {
		return err
	}
	if o.output != "" {
		return printKey(out, o.output, last)
	}
	return printIssued(out, last, s.nsFlag(), time.Now())
}

// waitForIssued waits until the new key is Ready and returns it; an error
// says what became of it instead and what to do.
func (s *session) waitForIssued(ctx context.Context, name string, timeout time.Duration) (*apikeysv1alpha1.ApiKey, error) {
	last, err := s.waitForKey(ctx, name, timeout, func(k *apikeysv1alpha1.ApiKey) (bool, error) {
		if err := stalledError(k); err != nil {
			return false, err
		}
		return isReady(k), nil
	})
	switch {
	case errors.Is(err, errWaitTimedOut):
		return nil, fmt.Errorf("apikey %s/%s was created but is not Ready after %s (%s); see 'kubectl describe apikey %s %s'",
			s.namespace, name, timeout, readySummary(last), name, s.nsFlag())
	case errors.Is(err, errKeyDeleted):
		return nil, fmt.Errorf("apikey %s/%s was deleted before it became Ready", s.namespace, name)
	case err != nil && last != nil && stalledError(last) != nil:
		return nil, fmt.Errorf("%w\nThe ApiKey was created but gets no token: "+
			"fix its spec ('kubectl edit apikey %s %s') or remove it ('kubectl apikey revoke %s %s')",
			err, name, s.nsFlag(), name, s.nsFlag())
	case err != nil:
		return nil, err
	}
	return last, nil
}

// printIssued reports a Ready key: who it is, how to tell its token apart,
// when it expires, and how to read the token. It has no token to print.
func printIssued(out io.Writer, key *apikeysv1alpha1.ApiKey, nsFlag string, now time.Time) error {
	st := key.Status
	expires := "never"
	if st.ExpiresAt != nil {
		expires = fmt.Sprintf("%s (%s)", st.ExpiresAt.UTC().Format(time.RFC3339), expiresIn(key, now))
	}
	_, err := fmt.Fprintf(out, "apikey/%s created in namespace %s and Ready.\n"+
		"  user:     %s\n"+
		"  identity: %s\n"+
		"  hint:     %s\n"+
		"  expires:  %s\n"+
		"  secret:   %s\n"+
		"Print the token with (add --delete to remove the Secret once you have stored it):\n"+
		"  kubectl apikey get-token %s %s\n",
		key.Name, key.Namespace, st.Username, identityOf(key), st.TokenHint, expires, st.SecretName, key.Name, nsFlag)
	return err
}
