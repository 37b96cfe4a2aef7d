package plugin

import (
	"context"
	"fmt"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// newSuspendCommand returns `suspend` (suspended true) or `resume` (false).
func newSuspendCommand(r *root, suspended bool) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "suspend NAME",
		Short: "Stop an ApiKey working until it is resumed",
		Long: `Suspend an ApiKey: set spec.suspended to true.

The auth server refuses the key's token within a second, whether or not the
operator is running. Nothing is deleted: 'kubectl apikey resume NAME' brings
the same token back.`,
		Example: `  # Stop a key while you investigate, then bring it back
  kubectl apikey suspend ci-deployer
  kubectl apikey resume ci-deployer`,
	}
	if !suspended {
		cmd.Use = "resume NAME"
		cmd.Short = "Make a suspended ApiKey work again"
		cmd.Long = `Resume an ApiKey: set spec.suspended back to false.

The auth server accepts the key's token again within a second, unless the key
has expired or was revoked.`
		cmd.Example = `  # Resume a key in another namespace
  kubectl apikey resume ci-deployer -n team-a`
	}
	cmd.Args = oneName
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		s, err := r.connect()
		if err != nil {
			return err
		}
		return s.setSuspended(cmd.Context(), args[0], suspended)
	}
	return cmd
}

// setSuspended patches spec.suspended and says what that did.
func (s *session) setSuspended(ctx context.Context, name string, suspended bool) error {
	key, err := s.getKey(ctx, name)
	if err != nil {
		return err
	}
	out := s.streams.Out
	if key.Spec.Suspended == suspended {
		state := "not suspended"
		if suspended {
			state = "already suspended"
		}
		_, err := fmt.Fprintf(out, "apikey/%s is %s (unchanged)\n", name, state)
		return err
	}
	patch := client.MergeFrom(key.DeepCopy())
	key.Spec.Suspended = suspended
	if err := s.client.Patch(ctx, key, patch); err != nil {
		return explain(err)
	}

	if suspended {
		_, err := fmt.Fprintf(out, "apikey/%s suspended: the auth server refuses its token within a second.\n"+
			"Resume it with: kubectl apikey resume %s %s\n", name, name, s.nsFlag())
		return err
	}
	if _, err := fmt.Fprintf(out, "apikey/%s resumed: its token authenticates again within a second.\n", name); err != nil {
		return err
	}
	if meta.IsStatusConditionTrue(key.Status.Conditions, apikeysv1alpha1.ConditionExpired) {
		_, err := fmt.Fprintf(out, "Note: the key has expired (%s), so its token is still refused; extend spec.ttl or spec.expiresAt.\n",
			expiresIn(key, time.Now()))
		return err
	}
	return nil
}
