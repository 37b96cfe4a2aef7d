package plugin

import (
	"context"
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

func newGetTokenCommand(r *root) *cobra.Command {
	var deleteSecret bool
	cmd := &cobra.Command{
		Use:   "get-token NAME [--delete]",
		Short: "Print an ApiKey's token from its one-time Secret",
		Long: `Print the raw token of an ApiKey, and nothing else, to stdout.

The operator writes each token once, into the Secret named in the key's
status.secretName. get-token reads it from there and prints it only if its
fingerprint matches the key's status.tokenFingerprint, which only the
operator writes. Anyone who may edit Secrets in the namespace can replace
the Secret with a token of their own (and its annotations with anything), so
a token that does not match is refused, not printed. The token of a
personal key (identity Owner) authenticates as its owner, so it is printed
only to that owner, as kube-apiserver names the caller.

A rotation writes the next token into the same Secret a moment before the
key's status reports it; get-token refuses the token in between and says to
retry in a moment.

--delete deletes the Secret after printing the token. The key stays valid;
only the stored copy of the token is gone, so keep the token you printed.
Once the Secret is gone the token cannot be read again: 'kubectl apikey
rotate NAME --wait' delivers a new token to the same Secret.`,
		Example: `  # Put the token in a variable
  TOKEN=$(kubectl apikey get-token ci-deployer)

  # Store it in a CI secret store, then remove it from the cluster
  kubectl apikey get-token ci-deployer -n team-a --delete | gh secret set API_TOKEN`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := r.connect()
			if err != nil {
				return err
			}
			return s.getToken(cmd.Context(), args[0], deleteSecret)
		},
	}
	cmd.Flags().BoolVar(&deleteSecret, "delete", false, "Delete the token's Secret after printing the token (the key stays valid)")
	return cmd
}

// getToken prints the key's token, alone on a line, and with deleteSecret
// deletes the Secret it came from. Errors never carry the token.
func (s *session) getToken(ctx context.Context, name string, deleteSecret bool) error {
	key, err := s.getKey(ctx, name)
	if err != nil {
		return err
	}
	if key.Status.SecretName == "" {
		if err := stalledError(key); err != nil {
			return fmt.Errorf("%w\nIt has no token: fix its spec, and the operator issues one", err)
		}
		return fmt.Errorf("apikey %s/%s has no token yet (%s); wait for it with 'kubectl wait --for=condition=Ready apikey/%s %s'",
			key.Namespace, key.Name, readySummary(key), key.Name, s.nsFlag())
	}
	if identityOf(key) == apikeysv1alpha1.IdentityOwner {
		if err := s.ownedByCaller(ctx, key); err != nil {
			return err
		}
	}

	// The Secret is read even when status.secretDeletedAt is set: a rotation
	// delivers to it again before status catches up, and the fingerprint
	// check below decides whether its token may be printed.
	secret := &corev1.Secret{}
	err = s.client.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}, secret)
	if apierrors.IsNotFound(err) {
		return secretGone(key, key.Status.SecretDeletedAt)
	}
	if err != nil {
		return fmt.Errorf("reading Secret %s/%s: %w", key.Namespace, key.Status.SecretName, err)
	}
	tok, err := tokenFrom(secret, key)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(s.streams.Out, tok); err != nil {
		return fmt.Errorf("writing the token: %w", err)
	}
	if !deleteSecret {
		return nil
	}

	// Only the Secret as it was read: a rotation writes the next token into
	// the same Secret, and deleting that would throw away a token nobody
	// has seen.
	err = s.client.Delete(ctx, secret, client.Preconditions{UID: &secret.UID, ResourceVersion: &secret.ResourceVersion})
	switch {
	case apierrors.IsConflict(err):
		return fmt.Errorf("the token was printed, but Secret %s/%s changed after it was read (a rotation may have delivered a new token), "+
			"so it was not deleted; run 'kubectl apikey get-token %s %s --delete' again", secret.Namespace, secret.Name, key.Name, s.nsFlag())
	case client.IgnoreNotFound(err) != nil:
		return fmt.Errorf("the token was printed, but deleting Secret %s/%s failed: %w", secret.Namespace, secret.Name, err)
	}
	// The token is already on stdout and the Secret gone; a notice that cannot
	// reach stderr changes neither, so it is not worth failing the command.
	_, _ = fmt.Fprintf(s.streams.ErrOut, "Deleted Secret %s/%s. apikey/%s stays valid; this was the last copy of its token in the cluster.\n",
		secret.Namespace, secret.Name, key.Name)
	return nil
}

// ownedByCaller refuses an Owner key that is not the caller's: its token
// authenticates as its owner, and a key of the name the caller once created
// may since have been deleted and created again by another editor of the
// namespace, as theirs. Who the caller is comes from kube-apiserver
// (SelfSubjectReview), so --as counts as the user it names.
func (s *session) ownedByCaller(ctx context.Context, key *apikeysv1alpha1.ApiKey) error {
	review := &authenticationv1.SelfSubjectReview{}
	if err := s.client.Create(ctx, review); err != nil {
		return fmt.Errorf("apikey %s/%s is a personal key, whose token authenticates as its owner, and kube-apiserver "+
			"would not say who you are (SelfSubjectReview), so its token is not printed: %w", key.Namespace, key.Name, err)
	}
	owner, you := "", review.Status.UserInfo.Username
	if key.Spec.Owner != nil {
		owner = key.Spec.Owner.Username
	}
	if owner == you {
		return nil
	}
	return fmt.Errorf("apikey %s/%s is a personal key of %q, not yours (%q): its token would let you act as its owner, "+
		"so it is not printed. If you created a key of that name for yourself, it has since been replaced "+
		"('kubectl apikey list %s' shows who owns each key); if you made it for %q, that user fetches it "+
		"(or you, as them: --as)", key.Namespace, key.Name, owner, you, s.nsFlag(), owner)
}

// tokenFrom returns the token in secret after checking that it is the one
// the operator issued for key. The Secret's type, controller and hash
// annotation catch mistakes; anyone who may write Secrets in the namespace
// can forge all three, so what decides is the token's fingerprint against
// key's status.tokenFingerprint, which only the operator writes.
func tokenFrom(secret *corev1.Secret, key *apikeysv1alpha1.ApiKey) (string, error) {
	where := fmt.Sprintf("Secret %s/%s", secret.Namespace, secret.Name)
	if secret.Type != apikeysv1alpha1.SecretType {
		return "", fmt.Errorf("%s has type %q, not %q: it is not a token delivered by the apikey-operator",
			where, secret.Type, apikeysv1alpha1.SecretType)
	}
	if ref := metav1.GetControllerOf(secret); ref == nil || ref.UID != key.UID {
		return "", fmt.Errorf("%s is not owned by apikey %s (uid %s): refusing to print a token the operator did not deliver for it",
			where, key.Name, key.UID)
	}
	tok := string(secret.Data[apikeysv1alpha1.SecretTokenKey])
	if tok == "" {
		return "", fmt.Errorf("%s has no %q entry", where, apikeysv1alpha1.SecretTokenKey)
	}
	if want := secret.Annotations[apikeysv1alpha1.TokenHashAnnotation]; want != token.Hash(tok) {
		return "", fmt.Errorf("%s holds a token that does not match its %s annotation: it was changed after delivery",
			where, apikeysv1alpha1.TokenHashAnnotation)
	}
	want := key.Status.TokenFingerprint
	if want == "" {
		return "", fmt.Errorf("apikey %s/%s has no status.tokenFingerprint, so the token in %s cannot be checked: refusing to print it. "+
			"An operator that predates fingerprints does not write one; upgrade it, "+
			"or read the Secret yourself if you trust everyone who may edit Secrets in %s",
			key.Namespace, key.Name, where, key.Namespace)
	}
	if subtle.ConstantTimeCompare([]byte(token.Fingerprint(tok)), []byte(want)) != 1 {
		if why := rotationUnderWay(key, secret); why != "" {
			return "", fmt.Errorf("%s and apikey %s/%s's status disagree: the Secret's token does not match status.tokenFingerprint %s, "+
				"and a rotation is under way (%s); refusing to print it until the operator reports the new token. "+
				"Retry in a moment; if this persists, see 'kubectl describe apikey %s -n %s'",
				where, key.Namespace, key.Name, want, why, key.Name, key.Namespace)
		}
		return "", fmt.Errorf("%s holds a token whose fingerprint does not match apikey %s/%s's status.tokenFingerprint %s: "+
			"the Secret and the key's status disagree, and no rotation appears to be under way, so it is not the token the operator issued "+
			"(the Secret was replaced or edited after delivery); refusing to print it. "+
			"Find out who wrote the Secret, then replace the token with 'kubectl apikey rotate %s -n %s --grace 0s --wait' or revoke the key",
			where, key.Namespace, key.Name, want, key.Name, key.Namespace)
	}
	return tok, nil
}

// rotationUnderWay says why a rotation seems to be in flight ("" if none
// shows): a rotate request that status does not report yet, or a Secret that
// says its token was issued after the one status reports. Anyone who may
// edit the ApiKey or the Secret can fake both, so they only choose the advice
// in an error; they never make get-token print a token.
func rotationUnderWay(key *apikeysv1alpha1.ApiKey, secret *corev1.Secret) string {
	if want := key.Annotations[apikeysv1alpha1.RotateAnnotation]; want != "" && want != key.Status.LastRotateRequest {
		return fmt.Sprintf("%s=%s is not yet status.lastRotateRequest", apikeysv1alpha1.RotateAnnotation, want)
	}
	issued, err := time.Parse(time.RFC3339, secret.Annotations[apikeysv1alpha1.IssuedAtAnnotation])
	if err == nil && key.Status.IssuedAt != nil && issued.After(key.Status.IssuedAt.Time) {
		return fmt.Sprintf("the Secret's %s %s is later than status.issuedAt %s",
			apikeysv1alpha1.IssuedAtAnnotation, issued.UTC().Format(time.RFC3339), key.Status.IssuedAt.UTC().Format(time.RFC3339))
	}
	return ""
}

// secretGone is the error for a key whose token can no longer be read.
func secretGone(key *apikeysv1alpha1.ApiKey, deletedAt *metav1.Time) error {
	when := ""
	if deletedAt != nil {
		when = fmt.Sprintf(" Secret %s was deleted at %s.", key.Status.SecretName, deletedAt.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("apikey %s/%s: the token was delivered once and its Secret is gone (status.secretDeletedAt), "+
		"so it cannot be read again.%s The key still works for whoever kept the token. "+
		"To deliver a new token to the same Secret: kubectl apikey rotate %s -n %s --wait",
		key.Namespace, key.Name, when, key.Name, key.Namespace)
}
