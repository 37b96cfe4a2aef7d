package plugin

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

func newRotateCommand(r *root) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate NAME",
		Short: "Request a rotation of an ApiKey's token (not supported by the operator yet)",
		Long: `Request a rotation: set the annotation ` + apikeysv1alpha1.RotateAnnotation + ` to the current time.

Rotation is not supported by the operator yet (it also rejects
spec.rotation), so the request is recorded on the ApiKey but no new token is
issued and the current token keeps working. To replace a token today, revoke
the key and create a new one.`,
		Example: `  # Record a rotation request
  kubectl apikey rotate ci-deployer

  # Replace the token today instead
  kubectl apikey revoke ci-deployer && kubectl apikey create ci-deployer --ttl 720h`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := r.connect()
			if err != nil {
				return err
			}
			return s.rotate(cmd.Context(), args[0], time.Now())
		},
	}
}

// rotate records a rotation request at now and says plainly that nothing
// else happens yet.
func (s *session) rotate(ctx context.Context, name string, now time.Time) error {
	key, err := s.getKey(ctx, name)
	if err != nil {
		return err
	}
	value := now.UTC().Format(time.RFC3339)
	patch := client.MergeFrom(key.DeepCopy())
	if key.Annotations == nil {
		key.Annotations = map[string]string{}
	}
	key.Annotations[apikeysv1alpha1.RotateAnnotation] = value
	if err := s.client.Patch(ctx, key, patch); err != nil {
		return explain(err)
	}
	_, err = fmt.Fprintf(s.streams.Out, "apikey/%s annotated %s=%s\n"+
		"Note: rotation is not supported by the operator yet; the request is recorded, "+
		"but no new token is issued and the current token (hint %s) keeps working.\n"+
		"To replace the token now: kubectl apikey revoke %s %s && kubectl apikey create %s %s\n",
		name, apikeysv1alpha1.RotateAnnotation, value,
		orNone(key.Status.TokenHint),
		name, s.nsFlag(), name, s.nsFlag())
	return err
}
