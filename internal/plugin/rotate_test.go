package plugin

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// TestRotationOutcome checks what `rotate --wait` makes of each status the
// operator may write after a request: done, still waiting, or a stall that
// ends the wait, including a request the operator dropped under a stall the
// key already had.
func TestRotationOutcome(t *testing.T) {
	since := metav1.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	cond := func(typ, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: reason, Message: "m",
			ObservedGeneration: 1, LastTransitionTime: since}
	}
	key := func(lastRequest string, conditions ...metav1.Condition) *apikeysv1alpha1.ApiKey {
		k := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "pat", Generation: 1}}
		k.Status.ObservedGeneration, k.Status.LastRotateRequest, k.Status.Conditions = 1, lastRequest, conditions
		k.Status.SecretName = "pat-token"
		return k
	}
	ready := cond(apikeysv1alpha1.ConditionReady, apikeysv1alpha1.ReasonIssued)
	policyStall := cond(apikeysv1alpha1.ConditionStalled, apikeysv1alpha1.ReasonOwnerPolicyNotInForce)
	secretStall := cond(apikeysv1alpha1.ConditionStalled, apikeysv1alpha1.ReasonSecretNameTaken)
	for _, tt := range []struct {
		name     string
		key      *apikeysv1alpha1.ApiKey
		before   *metav1.Condition
		done     bool
		stallErr bool
	}{
		{name: "rotated", key: key("v2", ready), done: true},
		{name: "not yet", key: key("v1", ready)},
		{name: "a new stall", key: key("v1", secretStall), stallErr: true},
		{name: "the stall it had, request pending", key: key("v1", secretStall), before: &secretStall},
		{name: "dropped under the stall it had", key: key("v2", policyStall), before: &policyStall, stallErr: true},
		{name: "the owner-rule stall it had, request not yet seen", key: key("v1", policyStall), before: &policyStall},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done, err := rotationOutcome(tt.key, "v2", tt.before)
			if done != tt.done || (err != nil) != tt.stallErr {
				t.Errorf("rotationOutcome = %t, %v; want done %t, a stall error %t", done, err, tt.done, tt.stallErr)
			}
		})
	}
}
