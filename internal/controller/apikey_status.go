package controller

import (
	"context"
	"fmt"
	"math"
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

// finishPass is the only writer of status. It sets each field and each
// condition from what the pass observed, writes them in one patch, then
// deletes the records that status has just stopped naming, and turns the
// pass's outcome into a result: a stalled key is not retried, a transient
// error is (with backoff), and a healthy key wakes at its next deadline.
func (r *ApiKeyReconciler) finishPass(ctx context.Context, p *pass, err error) (ctrl.Result, error) {
	if err == nil && p.forgery != nil {
		err = p.forgery
	}
	o := outcomeOf(err)
	reportIssuance(p)
	if p.validated {
		p.key.Status.Username = usernameFor(p.key)
	}
	c := conditions{key: p.key, base: p.base}
	setReady(p, c, o)
	r.setStalled(p, c, o)
	setReconciling(c, o)
	r.setExpired(p, c, o)
	r.setSuspended(p, c, o)
	r.setExpiringSoon(p, c, o)
	if len(p.key.Status.Conditions) > maxConditions {
		// The report comes first: types someone else wrote go once they
		// leave it no room, so that nobody holding apikeys/status can fill
		// the list to the schema's limit and keep a stall's reason or a
		// forgery's correction from being written. While there is room
		// they stay, and no other writer is fought over them.
		p.key.Status.Conditions = slices.DeleteFunc(p.key.Status.Conditions, func(c metav1.Condition) bool {
			return !slices.Contains(conditionTypes, c.Type)
		})
	}
	if o.retry == nil {
		p.key.Status.ObservedGeneration = p.key.Generation
	}

	if !equality.Semantic.DeepEqual(p.base.Status, p.key.Status) {
		patch := client.MergeFromWithOptions(p.base, client.MergeFromWithOptimisticLock{})
		if perr := r.Status().Patch(ctx, p.key, patch); perr != nil {
			return ctrl.Result{}, perr
		}
	}
	if rerr := r.deleteUnnamed(ctx, p); rerr != nil {
		return ctrl.Result{}, rerr
	}
	if o.retry != nil {
		return ctrl.Result{}, o.retry
	}
	var after time.Duration
	if !p.wakeAt.IsZero() {
		// A little slack so the pass runs at, not just before, the deadline.
		after = max(p.wakeAt.Sub(p.now), 0) + 10*time.Millisecond
		if after < 0 {
			after = math.MaxInt64 // Sub saturates about 292 years ahead: the sum wrapped
		}
	}
	if r.keys != nil {
		// The key watch keeps the instant (deadlines.go); a zero one drops
		// the instant asked for before.
		var at time.Time
		if after > 0 {
			at = time.Now().Add(after)
		}
		r.keys.wakeAt(client.ObjectKeyFromObject(p.key), at)
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

// deleteUnnamed deletes what the pass revoked or retired, now that status
// no longer names it. A revoked key is neither deleting nor suspended, so
// the auth server would go on accepting a record of it that the cache has
// not shown yet (another replica's, written during a leader handover):
// revocation asks the API server for the key's records. That List is
// matched against every record in kube-apiserver, which a revocation (a
// spec that broke a rule: rare) can afford; a deletion, whose tokens the
// auth server refuses from the deletionTimestamp on, does not pay it.
func (r *ApiKeyReconciler) deleteUnnamed(ctx context.Context, p *pass) error {
	if p.revoked {
		records, err := r.listRecords(ctx, p.key, true)
		if err != nil {
			return err
		}
		if err := r.deleteAll(ctx, p.key, records); err != nil {
			return err
		}
	}
	return r.deleteAll(ctx, p.key, p.retiring)
}

// outcome is how a pass ended: stalled (only a change to the key can fix
// it, not retried), retrying after a transient error, or neither.
type outcome struct {
	stall *stalledError
	retry error
}

func outcomeOf(err error) outcome {
	if stall, ok := asStalled(err); ok {
		return outcome{stall: stall}
	}
	return outcome{retry: err}
}

// healthy reports whether the pass ran every step.
func (o outcome) healthy() bool { return o.stall == nil && o.retry == nil }

// maxConditions is status.conditions' MaxItems in the CRD (apikey_types.go).
const maxConditions = 8

// conditionTypes are the conditions the operator writes; others stay only
// while they leave its own room.
var conditionTypes = []string{apikeysv1alpha1.ConditionReady, apikeysv1alpha1.ConditionReconciling,
	apikeysv1alpha1.ConditionStalled, apikeysv1alpha1.ConditionExpired, apikeysv1alpha1.ConditionSuspended,
	apikeysv1alpha1.ConditionExpiringSoon}

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

// setStalled: true while only a change to the key can help, an expired
// token included (so kstatus tools report it failed rather than in
// progress). One Warning when a key becomes Stalled for any reason but
// expiry (setExpired has its own): the controller will not retry on its
// own, so someone must act.
func (r *ApiKeyReconciler) setStalled(p *pass, c conditions, o outcome) {
	switch {
	case o.stall != nil:
		c.set(apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, o.stall.reason, o.stall.message)
		if !c.wasTrue(apikeysv1alpha1.ConditionStalled) {
			r.Recorder.Eventf(p.key, nil, corev1.EventTypeWarning, o.stall.reason, "Stall", o.stall.message)
		}
	case o.healthy() && p.expired():
		c.set(apikeysv1alpha1.ConditionStalled, metav1.ConditionTrue, apikeysv1alpha1.ReasonExpired, expiredMessage(p))
	default:
		c.drop(apikeysv1alpha1.ConditionStalled)
	}
}

// setReconciling: true while the controller retries after an error.
func setReconciling(c conditions, o outcome) {
	if o.retry != nil {
		c.set(apikeysv1alpha1.ConditionReconciling, metav1.ConditionTrue, apikeysv1alpha1.ReasonRetrying, retryMessage(o))
		return
	}
	c.drop(apikeysv1alpha1.ConditionReconciling)
}

func retryMessage(o outcome) string { return fmt.Sprintf("retrying after error: %v", o.retry) }

// setReady says whether the live token works, and if not, why. While the
// controller retries, an issued key stays as it was.
func setReady(p *pass, c conditions, o outcome) {
	st := &p.key.Status
	switch {
	case o.stall != nil:
		c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, o.stall.reason, o.stall.message)
	case o.retry != nil:
		if !p.issued() {
			c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonIssuing, retryMessage(o))
		}
	case p.expired():
		c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonExpired, expiredMessage(p))
	case p.key.Spec.Suspended:
		c.set(apikeysv1alpha1.ConditionReady, metav1.ConditionFalse, apikeysv1alpha1.ReasonSuspended,
			"spec.suspended is true: the key is refused until it is set to false")
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
	}
}

// setExpired: true once the live token has expired, with a Warning when it
// does. A pass that did not finish leaves it as it was.
func (r *ApiKeyReconciler) setExpired(p *pass, c conditions, o outcome) {
	switch {
	case !o.healthy():
	case p.expired():
		msg := expiredMessage(p)
		c.set(apikeysv1alpha1.ConditionExpired, metav1.ConditionTrue, apikeysv1alpha1.ReasonExpired, msg)
		if !c.wasTrue(apikeysv1alpha1.ConditionExpired) {
			r.Recorder.Eventf(p.key, nil, corev1.EventTypeWarning, apikeysv1alpha1.ReasonExpired, "Expire", msg)
		}
	default:
		c.drop(apikeysv1alpha1.ConditionExpired)
	}
}

func expiredMessage(p *pass) string {
	return fmt.Sprintf("The key expired at %s; extend spec.expiresAt or spec.ttl, or create a new ApiKey",
		p.expiresAt.UTC().Format(time.RFC3339))
}

// setSuspended keeps Suspended in step with spec.suspended, with an event
// when it changes. A pass that did not finish leaves it as it was.
func (r *ApiKeyReconciler) setSuspended(p *pass, c conditions, o outcome) {
	switch {
	case !o.healthy():
	case p.key.Spec.Suspended:
		c.set(apikeysv1alpha1.ConditionSuspended, metav1.ConditionTrue, apikeysv1alpha1.ReasonSuspended, "spec.suspended is true")
		if !c.wasTrue(apikeysv1alpha1.ConditionSuspended) {
			r.Recorder.Eventf(p.key, nil, corev1.EventTypeNormal, apikeysv1alpha1.ReasonSuspended, "Suspend", "The key is suspended")
		}
	default:
		c.drop(apikeysv1alpha1.ConditionSuspended)
		if c.wasTrue(apikeysv1alpha1.ConditionSuspended) {
			r.Recorder.Eventf(p.key, nil, corev1.EventTypeNormal, apikeysv1alpha1.ReasonResumed, "Resume", "The key works again")
		}
	}
}

// setExpiringSoon warns, once, that the live token is close to expiry. A
// stalled key drops it (Stalled says more); a retrying pass leaves it.
func (r *ApiKeyReconciler) setExpiringSoon(p *pass, c conditions, o outcome) {
	switch {
	case o.retry != nil:
	case o.stall != nil || !p.expiringSoon || p.expired():
		c.drop(apikeysv1alpha1.ConditionExpiringSoon)
	default:
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
}

// reportIssuance writes what the records say of the live token into status,
// overwriting whatever status said: it is a report, never an input.
func reportIssuance(p *pass) {
	st := &p.key.Status
	st.PreviousKeys = nil
	st.SecretDeletedAt = p.secretDeletedAt
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
