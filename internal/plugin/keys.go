package plugin

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// noValue is what a table cell or hint shows for an empty field, as kubectl
// shows one.
const noValue = "<none>"

// getKey reads the named ApiKey in the session's namespace; a missing key is
// an error that says where the plugin looked.
func (s *session) getKey(ctx context.Context, name string) (*apikeysv1alpha1.ApiKey, error) {
	key := &apikeysv1alpha1.ApiKey{}
	err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: name}, key)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("apikey %q not found in namespace %q; list the keys there with 'kubectl apikey list -n %s'",
			name, s.namespace, s.namespace)
	}
	if err != nil {
		return nil, explain(err)
	}
	return key, nil
}

// nsFlag is the -n argument that repeats the session's namespace in a hint.
func (s *session) nsFlag() string { return "-n " + s.namespace }

// currentCondition returns the condition of type typ if the operator wrote it
// for the key's current spec generation; nil otherwise.
func currentCondition(key *apikeysv1alpha1.ApiKey, typ string) *metav1.Condition {
	c := meta.FindStatusCondition(key.Status.Conditions, typ)
	if c == nil || c.ObservedGeneration < key.Generation {
		return nil
	}
	return c
}

// isReady reports whether the operator found the current spec good and the
// key's token delivered.
func isReady(key *apikeysv1alpha1.ApiKey) bool {
	c := currentCondition(key, apikeysv1alpha1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && key.Status.SecretName != ""
}

// stalledError is non-nil if the operator gave up on the key's current spec:
// it will not get a token until the spec changes.
func stalledError(key *apikeysv1alpha1.ApiKey) error {
	c := currentCondition(key, apikeysv1alpha1.ConditionStalled)
	if c == nil || c.Status != metav1.ConditionTrue {
		return nil
	}
	return fmt.Errorf("apikey %s/%s is Stalled (%s): %s", key.Namespace, key.Name, c.Reason, c.Message)
}

// readySummary says in a few words why a key is or is not Ready; key may be
// nil when the plugin never saw it.
func readySummary(key *apikeysv1alpha1.ApiKey) string {
	var c *metav1.Condition
	if key != nil {
		c = meta.FindStatusCondition(key.Status.Conditions, apikeysv1alpha1.ConditionReady)
	}
	if c == nil {
		return "no status yet: is the apikey-operator running?"
	}
	return fmt.Sprintf("Ready=%s, %s: %s", c.Status, c.Reason, c.Message)
}

// readyColumn is the READY cell: the Ready condition's status.
func readyColumn(key *apikeysv1alpha1.ApiKey) string {
	if c := meta.FindStatusCondition(key.Status.Conditions, apikeysv1alpha1.ConditionReady); c != nil {
		return string(c.Status)
	}
	return "Unknown"
}

// identityOf is spec.identity with its default filled in.
func identityOf(key *apikeysv1alpha1.ApiKey) apikeysv1alpha1.Identity {
	if key.Spec.Identity == "" {
		return apikeysv1alpha1.IdentityKey
	}
	return key.Spec.Identity
}

// expiresIn is an expiry relative to now: "in 29d", "expired 2h ago", or
// "never" for an issued key without one.
func expiresIn(key *apikeysv1alpha1.ApiKey, now time.Time) string {
	exp := key.Status.ExpiresAt
	switch {
	case exp != nil && exp.After(now):
		return "in " + duration.HumanDuration(exp.Sub(now))
	case exp != nil:
		return "expired " + duration.HumanDuration(now.Sub(exp.Time)) + " ago"
	case key.Status.IssuedAt != nil:
		return "never"
	default:
		return noValue
	}
}

// ago is a past instant relative to now, "5m ago", or "<none>".
func ago(t *metav1.Time, now time.Time) string {
	if t == nil {
		return noValue
	}
	return duration.HumanDuration(now.Sub(t.Time)) + " ago"
}

// age is how long ago the object was created, as kubectl's AGE column shows it.
func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}
