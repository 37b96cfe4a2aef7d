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

// computeConditions sets Ready, Reconciling, Stalled, Expired and Suspended
// from the pass. It emits an event when a key expires or is suspended/resumed.
func (r *ApiKeyReconciler) computeConditions(p *pass, err error) {
	key := p.key
	gen := key.Generation
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&key.Status.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}
	drop := func(typ string) { meta.RemoveStatusCondition(&key.Status.Conditions, typ) }
	wasTrue := func(typ string) bool { return meta.IsStatusConditionTrue(p.base.Status.Conditions, typ) }

	if stall, ok := asStalled(err); ok {
		set(ConditionReady, metav1.ConditionFalse, stall.reason, stall.message)
		set(ConditionStalled, metav1.ConditionTrue, stall.reason, stall.message)
		drop(ConditionReconciling)
		drop(ConditionExpiringSoon)
		if stall.reason == ReasonStatusForged && !wasTrue(ConditionStalled) {
			r.Recorder.Eventf(key, nil, corev1.EventTypeWarning, ReasonStatusForged, "DetectForgery", stall.message)
		}
		return
	}
	drop(ConditionStalled)
	if err != nil {
		msg := fmt.Sprintf("retrying after error: %v", err)
		set(ConditionReconciling, metav1.ConditionTrue, ReasonRetrying, msg)
		if !p.issued() {
			set(ConditionReady, metav1.ConditionFalse, ReasonIssuing, msg)
		}
		return
	}
	drop(ConditionReconciling)

	st := &key.Status
	switch {
	case p.expired():
		msg := fmt.Sprintf("The key expired at %s; extend spec.expiresAt or spec.ttl, or create a new ApiKey",
			p.expiresAt.UTC().Format(time.RFC3339))
		set(ConditionReady, metav1.ConditionFalse, ReasonExpired, msg)
		set(ConditionExpired, metav1.ConditionTrue, ReasonExpired, msg)
		// Expired is final until the spec changes: Stalled lets kstatus
		// tools report it as failed rather than in progress.
		set(ConditionStalled, metav1.ConditionTrue, ReasonExpired, msg)
		if !wasTrue(ConditionExpired) {
			r.Recorder.Eventf(key, nil, corev1.EventTypeWarning, ReasonExpired, "Expire", msg)
		}
	case key.Spec.Suspended:
		msg := "spec.suspended is true: the key is refused until it is set to false"
		set(ConditionReady, metav1.ConditionFalse, ReasonSuspended, msg)
		drop(ConditionExpired)
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
		set(ConditionReady, metav1.ConditionTrue, ReasonIssued, msg)
		drop(ConditionExpired)
	}

	if p.expiringSoon && !p.expired() {
		advice := "rotate it (a new token gets a fresh spec.ttl) or lengthen spec.ttl"
		if key.Spec.TTL == nil {
			advice = "extend spec.expiresAt (a rotation does not), or create a new ApiKey"
		}
		msg := fmt.Sprintf("The key expires at %s: %s", p.expiresAt.UTC().Format(time.RFC3339), advice)
		set(ConditionExpiringSoon, metav1.ConditionTrue, ReasonExpiringSoon, msg)
		if !wasTrue(ConditionExpiringSoon) {
			r.Recorder.Eventf(key, nil, corev1.EventTypeWarning, ReasonExpiringSoon, "WarnExpiry", msg)
		}
	} else {
		drop(ConditionExpiringSoon)
	}

	if key.Spec.Suspended {
		set(ConditionSuspended, metav1.ConditionTrue, ReasonSuspended, "spec.suspended is true")
		if !wasTrue(ConditionSuspended) {
			r.Recorder.Eventf(key, nil, corev1.EventTypeNormal, ReasonSuspended, "Suspend", "The key is suspended")
		}
	} else {
		drop(ConditionSuspended)
		if wasTrue(ConditionSuspended) {
			r.Recorder.Eventf(key, nil, corev1.EventTypeNormal, ReasonResumed, "Resume", "The key works again")
		}
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
