package controller

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// finishPass computes status from what the pass observed, writes it in one
// patch, and turns the pass's outcome into a result: a stalled key is not
// retried, a transient error is (with backoff), and a healthy key wakes at
// its next deadline.
func (r *ApiKeyReconciler) finishPass(ctx context.Context, p *pass, err error) (ctrl.Result, error) {
	reportIssuance(p)
	reportExpiry(p)
	if err == nil && p.forgery != nil {
		err = p.forgery
	}
	r.computeConditions(p, err)
	if _, isStalled := asStalled(err); err == nil || isStalled {
		p.key.Status.ObservedGeneration = p.key.Generation
		err = nil
	}

	if !equality.Semantic.DeepEqual(p.base.Status, p.key.Status) {
		patch := client.MergeFromWithOptions(p.base, client.MergeFromWithOptimisticLock{})
		if perr := r.Status().Patch(ctx, p.key, patch); perr != nil {
			return ctrl.Result{}, perr
		}
	}
	if err != nil || p.wakeAt.IsZero() {
		return ctrl.Result{}, err
	}
	// A little slack so the pass runs at, not just before, the deadline.
	return ctrl.Result{RequeueAfter: p.wakeAt.Sub(p.now) + 10*time.Millisecond}, nil
}

// conditions writes a pass's conditions at the key's generation, and tells
// which were true before the pass.
type conditions struct {
	key  *apikeysv1alpha1.ApiKey
	base *apikeysv1alpha1.ApiKey
}

func (c conditions) set(typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&c.key.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: c.key.Generation,
	})
}

func (c conditions) drop(typ string) { meta.RemoveStatusCondition(&c.key.Status.Conditions, typ) }

func (c conditions) wasTrue(typ string) bool {
	return meta.IsStatusConditionTrue(c.base.Status.Conditions, typ)
}

// computeConditions sets Ready, Reconciling, Stalled, Expired, Suspended
// and ExpiringSoon from the pass. It emits an event when a key stalls,
// expires, is about to, or is suspended/resumed.
func (r *ApiKeyReconciler) computeConditions(p *pass, err error) {
	c := conditions{key: p.key, base: p.base}
	if stall, ok := asStalled(err); ok {
		c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, stall.reason, stall.message)
		c.set(apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, stall.reason, stall.message)
		c.drop(apikeysv1alpha1.ConditionReconciling)
		c.drop(apikeysv1alpha1.ConditionExpiringSoon)
		// One Warning when a key becomes Stalled, whatever the reason: the
		// controller will not retry on its own, so someone must act.
		if !c.wasTrue(apikeysv1alpha1.ConditionStalled) {
			r.Recorder.Eventf(p.key, nil, corev1.EventTypeWarning, stall.reason, "Stall", stall.message)
		}
		return
	}
	c.drop(apikeysv1alpha1.ConditionStalled)
	if err != nil {
		msg := fmt.Sprintf("retrying after error: %v", err)
		c.set(apikeysv1alpha1.ConditionReconciling, metav1.ConditionTrue, apikeysv1alpha1.ReasonRetrying, msg)
		if !p.issued() {
			c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonIssuing, msg)
		}
		return
	}
	c.drop(apikeysv1alpha1.ConditionReconciling)
	r.reportReady(p, c)
	r.reportSuspension(p, c)
	r.reportExpiringSoon(p, c)
}

// reportReady says whether the live token works, and if not, why.
func (r *ApiKeyReconciler) reportReady(p *pass, c conditions) {
	st := &p.key.Status
	switch {
	case p.expired():
		msg := fmt.Sprintf("The key expired at %s; extend spec.expiresAt or spec.ttl, or create a new ApiKey",
			p.expiresAt.UTC().Format(time.RFC3339))
		c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonExpired, msg)
		c.set(apikeysv1alpha1.ConditionExpired, metav1.ConditionTrue, apikeysv1alpha1.ReasonExpired, msg)
		// Expired is final until the spec changes: Stalled lets kstatus
		// tools report it as failed rather than in progress.
		c.set(apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonExpired, msg)
		if !c.wasTrue(apikeysv1alpha1.ConditionExpired) {
			r.Recorder.Eventf(p.key, nil, corev1.EventTypeWarning, apikeysv1alpha1.ReasonExpired, "Expire", msg)
		}
	case p.key.Spec.Suspended:
		c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonSuspended,
			"spec.suspended is true: the key is refused until it is set to false")
		c.drop(apikeysv1alpha1.ConditionExpired)
	default:
		msg := fmt.Sprintf("Token %s is live; delivered to Secret %s", st.TokenHint, st.SecretName)
		if st.SecretDeletedAt != nil {
			msg = fmt.Sprintf("Token %s is live; its Secret %s was deleted at %s (the key stays valid)",
				st.TokenHint, st.SecretName, st.SecretDeletedAt.UTC().Format(time.RFC3339))
		}
		for _, prev := range st.PreviousKeys {
			msg += fmt.Sprintf("; previous token %s is accepted until %s",
				prev.TokenHint, prev.ValidUntil.UTC().Format(time.RFC3339))
		}
		c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionTrue, apikeysv1alpha1.ReasonIssued, msg)
		c.drop(apikeysv1alpha1.ConditionExpired)
	}
}

// reportSuspension keeps Suspended in step with spec.suspended.
func (r *ApiKeyReconciler) reportSuspension(p *pass, c conditions) {
	if p.key.Spec.Suspended {
		c.set(apikeysv1alpha1.ConditionSuspended, metav1.ConditionTrue, apikeysv1alpha1.ReasonSuspended, "spec.suspended is true")
		if !c.wasTrue(apikeysv1alpha1.ConditionSuspended) {
			r.Recorder.Eventf(p.key, nil, corev1.EventTypeNormal, apikeysv1alpha1.ReasonSuspended, "Suspend", "The key is suspended")
		}
		return
	}
	c.drop(apikeysv1alpha1.ConditionSuspended)
	if c.wasTrue(apikeysv1alpha1.ConditionSuspended) {
		r.Recorder.Eventf(p.key, nil, corev1.EventTypeNormal, apikeysv1alpha1.ReasonResumed, "Resume", "The key works again")
	}
}

// reportExpiringSoon warns, once, that the live token is close to expiry.
func (r *ApiKeyReconciler) reportExpiringSoon(p *pass, c conditions) {
	if !p.expiringSoon || p.expired() {
		c.drop(apikeysv1alpha1.ConditionExpiringSoon)
		return
	}
	advice := "rotate it (a new token gets a fresh spec.ttl) or lengthen spec.ttl"
	if p.key.Spec.TTL == nil {
		advice = "extend spec.expiresAt (a rotation does not), or create a new ApiKey"
	}
	msg := fmt.Sprintf("The key expires at %s: %s", p.expiresAt.UTC().Format(time.RFC3339), advice)
	c.set(apikeysv1alpha1.ConditionExpiringSoon, metav1.ConditionTrue, apikeysv1alpha1.ReasonExpiringSoon, msg)
	if !c.wasTrue(apikeysv1alpha1.ConditionExpiringSoon) {
		r.Recorder.Eventf(p.key, nil, corev1.EventTypeWarning, apikeysv1alpha1.ReasonExpiringSoon, "WarnExpiry", msg)
	}
}

// reportIssuance writes what the records say of the live token into status,
// overwriting whatever status said: it is a report, never an input.
func reportIssuance(p *pass) {
	st := &p.key.Status
	st.PreviousKeys = nil
	if p.live == nil {
		st.RecordName, st.TokenHint, st.TokenFingerprint, st.SecretName, st.LastRotateRequest = "", "", "", "", ""
		st.IssuedAt, st.ExpiresAt, st.SecretDeletedAt = nil, nil, nil
		return
	}
	spec := &p.live.Spec
	st.RecordName = p.live.Name
	st.TokenHint = spec.TokenHint
	st.TokenFingerprint = spec.TokenFingerprint
	st.SecretName = spec.SecretName
	st.IssuedAt = spec.IssuedAt.DeepCopy()
	st.LastRotateRequest = spec.RotateRequest
	st.ExpiresAt = p.expiresAt
	if p.expiresAt == nil {
		st.ExpiresAt = spec.ExpiresAt
	}
	for i := range p.records {
		if until := p.records[i].Spec.ValidUntil; until != nil && p.now.Before(until.Time) {
			st.PreviousKeys = append(st.PreviousKeys, apikeysv1alpha1.PreviousKey{
				TokenHint: p.records[i].Spec.TokenHint, ValidUntil: *until.DeepCopy()})
		}
	}
	slices.SortFunc(st.PreviousKeys, func(a, b apikeysv1alpha1.PreviousKey) int { return a.ValidUntil.Compare(b.ValidUntil.Time) })
	// The auth server reports use on the records; the newest wins.
	for i := range p.records {
		if used := p.records[i].Status.LastUsedAt; used != nil && (st.LastUsedAt == nil || used.After(st.LastUsedAt.Time)) {
			st.LastUsedAt = used.DeepCopy()
		}
	}
}
