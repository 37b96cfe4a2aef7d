package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func newRevokeCommand(r *root) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "revoke NAME [--wait]",
		Short: "Revoke an ApiKey: delete it so its token stops working",
		Long: `Revoke an ApiKey by deleting it. This is how a key is revoked.

Revocation is immediate in the auth server: it refuses the token within a
second of the delete (it watches ApiKeys itself), whether or not the operator
is running. The operator then removes the key's hashed records and its
Secret goes with it. It cannot be undone: a new key gets a new token.

--wait waits until the ApiKey is gone, i.e. until the operator has removed
its records and let the object go.`,
		Example: `  # Revoke a leaked key now
  kubectl apikey revoke ci-deployer -n team-a

  # Revoke and wait until its records are cleaned up
  kubectl apikey revoke ci-deployer --wait --timeout 2m`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout must be positive, e.g. 60s; got %s", timeout)
			}
			s, err := r.connect()
			if err != nil {
				return err
			}
			return s.revoke(cmd.Context(), args[0], wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "Wait until the ApiKey is gone (its records removed)")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "How long to wait with --wait")
	return cmd
}

// revoke deletes the key; with wait, it returns once the key is gone.
func (s *session) revoke(ctx context.Context, name string, wait bool, timeout time.Duration) error {
	key, err := s.getKey(ctx, name)
	if err != nil {
		return err
	}
	if err := s.client.Delete(ctx, key, client.Preconditions{UID: &key.UID}); client.IgnoreNotFound(err) != nil {
		return explain(err)
	}
	out := s.streams.Out
	if _, err := fmt.Fprintf(out, "apikey/%s revoked: the auth server refuses its token (hint %s) within a second.\n",
		name, orNone(key.Status.TokenHint)); err != nil {
		return err
	}
	if !wait {
		_, err := fmt.Fprint(out, "The operator now removes its records; its Secret is garbage-collected with it.\n")
		return err
	}
	err = s.waitForGone(ctx, name, timeout)
	if errors.Is(err, errWaitTimedOut) {
		return fmt.Errorf("apikey %s/%s is revoked, but still present after %s: its records were not removed yet; "+
			"is the apikey-operator running? See 'kubectl describe apikey %s %s'",
			s.namespace, name, timeout, name, s.nsFlag())
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "apikey/%s is gone, and so are its records; its Secret is garbage-collected with it.\n", name)
	return err
}
