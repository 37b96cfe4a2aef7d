package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// rotateOptions are the flags of `kubectl apikey rotate`.
type rotateOptions struct {
	// grace is written to spec.rotation.gracePeriod when setGrace.
	grace    time.Duration
	setGrace bool
	wait     bool
	timeout  time.Duration
}

func newRotateCommand(r *root) *cobra.Command {
	o := &rotateOptions{}
	cmd := &cobra.Command{
		Use:   "rotate NAME [--grace DURATION] [--wait] [--timeout DURATION]",
		Short: "Replace an ApiKey's token with a new one in the same Secret",
		Long: `Rotate an ApiKey: the operator issues a new token into the same Secret
(status.secretName), so workloads that mount or read it pick it up, and the
key keeps its name, identity and scopes.

rotate sets the annotation ` + apikeysv1alpha1.RotateAnnotation + ` to a fresh value (the current
time); each new value rotates once, and status.lastRotateRequest shows the
value the operator acted on. The previous token keeps working for the key's
spec.rotation.gracePeriod (default 0: refused as soon as the new token is
issued); status.previousKeys lists it until then. A suspended key is rotated
too and stays suspended; a Stalled key is rotated only once its cause is gone.

--grace sets spec.rotation.gracePeriod in the same patch. That is a lasting
spec change, which applies to later rotations too. It must be 0 or more and
shorter than spec.rotation.every. If Git manages the ApiKey (Argo CD, Flux),
set spec.rotation.gracePeriod there instead, or the next sync reverts it;
likewise change the annotation in Git rather than with this command.

--wait waits until the operator has rotated the key, then prints the new
token's hint, its Secret and until when the previous token works. It exits
non-zero if the key becomes Stalled, is deleted, or --timeout passes.`,
		Example: `  # Rotate a leaked token now and refuse the old one at once
  kubectl apikey rotate ci-deployer --grace 0s --wait

  # Rotate, keeping the old token working for an hour while pods restart
  kubectl apikey rotate billing-client -n team-a --grace 1h --wait
  kubectl -n team-a rollout restart deployment/billing-worker

  # Ask for a rotation and return at once; read the new token afterwards
  kubectl apikey rotate ci-deployer
  kubectl apikey get-token ci-deployer`,
		Args: oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.setGrace = cmd.Flags().Changed("grace")
			if o.setGrace && o.grace < 0 {
				return fmt.Errorf("--grace must be 0 or more, e.g. 0s to refuse the old token at once or 1h; got %s", o.grace)
			}
			if o.timeout <= 0 {
				return fmt.Errorf("--timeout must be positive, e.g. 60s; got %s", o.timeout)
			}
			s, err := r.connect()
			if err != nil {
				return err
			}
			return s.rotate(cmd.Context(), args[0], o, time.Now())
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.grace, "grace", 0,
		"How long the previous token keeps working, e.g. 1h: sets spec.rotation.gracePeriod, which persists (default: the key's, else 0)")
	f.BoolVar(&o.wait, "wait", false, "Wait until the operator has delivered the new token (or the key is Stalled)")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "How long to wait with --wait")
	return cmd
}

// rotate requests a rotation at now with one merge patch and, with --wait,
// reports the new token's hint once the operator has delivered it. It never
// reads a token.
func (s *session) rotate(ctx context.Context, name string, o *rotateOptions, now time.Time) error {
	key, err := s.getKey(ctx, name)
	if err != nil {
		return err
	}
	if err := o.checkGrace(key); err != nil {
		return err
	}

	value := now.UTC().Format(time.RFC3339Nano)
	body, err := rotatePatch(value, o)
	if err != nil {
		return err
	}
	if err := s.client.Patch(ctx, key, client.RawPatch(types.MergePatchType, body)); err != nil {
		return explain(err)
	}
	// From here key's status is the last the operator wrote before the
	// request: the token being replaced.
	if err := s.printRequested(key, value, o); err != nil {
		return err
	}
	if !o.wait {
		_, err := fmt.Fprintf(s.streams.Out, "The operator now delivers a new token to Secret %s; "+
			"status.lastRotateRequest shows %s once it has. Then print the new token with:\n"+
			"  kubectl apikey get-token %s %s\n",
			secretOf(key), value, name, s.nsFlag())
		return err
	}
	return s.waitForRotation(ctx, key, value, o.timeout)
}

// checkGrace refuses a --grace the API server would refuse too, before
// anything is patched.
func (o *rotateOptions) checkGrace(key *apikeysv1alpha1.ApiKey) error {
	if !o.setGrace {
		return nil
	}
	if rot := key.Spec.Rotation; rot != nil && rot.Every != nil && o.grace >= rot.Every.Duration {
		return fmt.Errorf("--grace %s must be shorter than apikey %s/%s's spec.rotation.every (%s): a key has at most two live tokens; "+
			"pick a shorter --grace, or lengthen spec.rotation.every first", o.grace, key.Namespace, key.Name, rot.Every.Duration)
	}
	return nil
}

// rotatePatch is the one merge patch that asks for a rotation: the
// annotation's new value and, with --grace, spec.rotation.gracePeriod.
func rotatePatch(value string, o *rotateOptions) ([]byte, error) {
	patch := map[string]any{
		"metadata": map[string]any{
			"annotations": map[string]string{apikeysv1alpha1.RotateAnnotation: value},
		},
	}
	if o.setGrace {
		patch["spec"] = map[string]any{
			"rotation": map[string]any{"gracePeriod": metav1.Duration{Duration: o.grace}},
		}
	}
	return json.Marshal(patch)
}

// printRequested says what was asked of the operator: the annotation's value
// and the grace period the previous token gets.
func (s *session) printRequested(key *apikeysv1alpha1.ApiKey, value string, o *rotateOptions) error {
	grace := gracePeriodOf(key)
	source := "spec.rotation.gracePeriod"
	if o.setGrace {
		source += ", set by --grace; it stays for later rotations"
	}
	current := "the current token " + key.Status.TokenHint
	fate := current + " is refused as soon as the new one is issued"
	switch {
	case key.Status.TokenHint == "":
		fate = "the key has no token yet; its first token answers this request"
	case grace > 0:
		fate = fmt.Sprintf("%s keeps working for %s after the rotation", current, grace)
	}
	_, err := fmt.Fprintf(s.streams.Out, "apikey/%s rotation requested: %s=%s\n"+
		"  grace: %s (%s): %s\n",
		key.Name, apikeysv1alpha1.RotateAnnotation, value, grace, source, fate)
	return err
}

// waitForRotation waits until the operator reports the request value as acted
// on, for the key's current spec, and prints the outcome.
func (s *session) waitForRotation(ctx context.Context, previous *apikeysv1alpha1.ApiKey, value string,
	timeout time.Duration) error {
	// A key that was Stalled already may stay so without the operator
	// writing anything; only a stall that differs from this one is news.
	stalledBefore := stalledCondition(previous)
	if stalledBefore != nil {
		_, _ = fmt.Fprintf(s.streams.ErrOut, "Note: apikey/%s is Stalled (%s): %s\n"+
			"The operator rotates it only once that cause is gone; waiting up to %s.\n",
			previous.Name, stalledBefore.Reason, stalledBefore.Message, timeout)
	}

	last, err := s.waitForKey(ctx, previous.Name, timeout, func(k *apikeysv1alpha1.ApiKey) (bool, error) {
		return rotationOutcome(k, value, stalledBefore)
	})
	if err != nil {
		return s.rotationWaitError(err, previous, last, value, timeout)
	}
	if err := unchangedToken(previous, last); err != nil {
		return err
	}
	return printRotated(s.streams.Out, last, previous.Status.TokenHint, s.nsFlag())
}

// rotationOutcome says whether k shows the rotation asked for with value
// done, or an error if it will not happen: a new stall, or a request the
// operator dropped (a personal key's rotation asked for while the owner
// rule was not in force is recorded as answered without a new token, so
// it never happens; the owner asks again). stalledBefore is the stall the
// key had before the request, which alone is no news.
func rotationOutcome(k *apikeysv1alpha1.ApiKey, value string, stalledBefore *metav1.Condition) (bool, error) {
	c := stalledCondition(k)
	dropped := c != nil && c.Reason == apikeysv1alpha1.ReasonOwnerPolicyNotInForce && k.Status.LastRotateRequest == value
	if c != nil && (dropped || stalledBefore == nil || !sameCondition(c, stalledBefore)) {
		return false, stalledError(k)
	}
	return rotated(k, value), nil
}

// rotationWaitError says why waiting for a rotation ended without one, and
// what to do next.
func (s *session) rotationWaitError(err error, previous, last *apikeysv1alpha1.ApiKey, value string, timeout time.Duration) error {
	name := previous.Name
	switch {
	case errors.Is(err, errWaitTimedOut):
		if last == nil {
			last = previous
		}
		why := fmt.Sprintf("status.lastRotateRequest is %q; %s", last.Status.LastRotateRequest, readySummary(last))
		if stalled := stalledError(last); stalled != nil {
			why = stalled.Error()
		}
		return fmt.Errorf("apikey %s/%s was not rotated within %s (%s). "+
			"The request (%s=%s) stays: the operator acts on it once it can; see 'kubectl describe apikey %s %s'",
			s.namespace, name, timeout, why, apikeysv1alpha1.RotateAnnotation, value, name, s.nsFlag())
	case errors.Is(err, errKeyDeleted):
		return fmt.Errorf("apikey %s/%s was deleted while waiting for its rotation: it was revoked, and so were its tokens", s.namespace, name)
	case last != nil && stalledError(last) != nil:
		return fmt.Errorf("%w\nNo new token was issued (the live token is still %s). "+
			"Fix the cause, then run 'kubectl apikey rotate %s %s --wait' again",
			err, orNone(last.Status.TokenHint), name, s.nsFlag())
	default:
		return err
	}
}

// unchangedToken is non-nil if the operator reports the request as acted on
// but the live token is the one it had before: nothing was rotated.
func unchangedToken(previous, now *apikeysv1alpha1.ApiKey) error {
	fingerprint := previous.Status.TokenFingerprint
	if fingerprint == "" || now.Status.TokenFingerprint != fingerprint {
		return nil
	}
	return fmt.Errorf("apikey %s/%s: the operator reports the request as acted on (status.lastRotateRequest %s), "+
		"but the live token is still %s, issued before it: no new token was delivered. "+
		"A token issued by an operator version without rotation has the request in force taken as answered on upgrade; "+
		"run 'kubectl apikey rotate %s -n %s --wait' again, and see 'kubectl describe apikey %s -n %s' if it recurs",
		now.Namespace, now.Name, now.Status.LastRotateRequest, now.Status.TokenHint, now.Name, now.Namespace, now.Name, now.Namespace)
}

// rotated reports whether the operator has acted on the rotation request
// value and finished its pass for the key's current spec: Ready, or not
// Ready only because the key is suspended.
func rotated(key *apikeysv1alpha1.ApiKey, value string) bool {
	if key.Status.LastRotateRequest != value || key.Status.ObservedGeneration != key.Generation {
		return false
	}
	if c := currentCondition(key, apikeysv1alpha1.ConditionReconciling); c != nil && c.Status == metav1.ConditionTrue {
		return false
	}
	if isReady(key) {
		return true
	}
	c := currentCondition(key, apikeysv1alpha1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == apikeysv1alpha1.ReasonSuspended && key.Status.SecretName != ""
}

// printRotated reports a rotated key: the new token's hint and Secret, and
// what became of the previous token. It has no token to print.
func printRotated(out io.Writer, key *apikeysv1alpha1.ApiKey, previousHint, nsFlag string) error {
	st := key.Status
	issued := noValue
	if st.IssuedAt != nil {
		issued = st.IssuedAt.UTC().Format(time.RFC3339)
	}
	suspended := ""
	if key.Spec.Suspended {
		suspended = fmt.Sprintf(" It stays suspended: the new token works once you run 'kubectl apikey resume %s %s'.", key.Name, nsFlag)
	}
	if _, err := fmt.Fprintf(out, "apikey/%s rotated.%s\n"+
		"  hint:     %s\n"+
		"  issued:   %s\n"+
		"  secret:   %s\n",
		key.Name, suspended, st.TokenHint, issued, st.SecretName); err != nil {
		return err
	}
	previousListed := false
	for _, prev := range st.PreviousKeys {
		previousListed = previousListed || prev.TokenHint == previousHint
		if _, err := fmt.Fprintf(out, "  previous: %s accepted until %s\n",
			prev.TokenHint, prev.ValidUntil.UTC().Format(time.RFC3339)); err != nil {
			return err
		}
	}
	if previousHint != "" && !previousListed {
		if _, err := fmt.Fprintf(out, "  previous: %s refused from now on\n", previousHint); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(out, "Print the new token with (add --delete to remove the Secret once you have stored it):\n"+
		"  kubectl apikey get-token %s %s\n", key.Name, nsFlag)
	return err
}

// gracePeriodOf is how long a superseded token of key keeps working.
func gracePeriodOf(key *apikeysv1alpha1.ApiKey) time.Duration {
	if rot := key.Spec.Rotation; rot != nil && rot.GracePeriod != nil && rot.GracePeriod.Duration > 0 {
		return rot.GracePeriod.Duration
	}
	return 0
}

// secretOf is the Secret the key's next token goes to: the one its token
// went to, else the one its spec names.
func secretOf(key *apikeysv1alpha1.ApiKey) string {
	switch {
	case key.Status.SecretName != "":
		return key.Status.SecretName
	case key.Spec.Secret.Name != "":
		return key.Spec.Secret.Name
	default:
		return apikeysv1alpha1.DefaultSecretName(key.Name)
	}
}

// stalledCondition is the key's Stalled condition if it is true for the
// key's current spec; nil otherwise.
func stalledCondition(key *apikeysv1alpha1.ApiKey) *metav1.Condition {
	if c := currentCondition(key, apikeysv1alpha1.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue {
		return c
	}
	return nil
}

// sameCondition reports whether a and b say the same thing, as written by
// the same status update.
func sameCondition(a, b *metav1.Condition) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message &&
		a.ObservedGeneration == b.ObservedGeneration && a.LastTransitionTime.Equal(&b.LastTransitionTime)
}
