package controller

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// Rotation replaces a key's live token with a new one in the same Secret.
// It is ordered so that a consumer reading the Secret at any moment gets a
// token that authenticates, and so that a crash between any two writes
// resumes to one delivered live token (docs/apikey.md, Rotation):
//
//  1. make room: a token still in an earlier grace period goes, so a key
//     never has more than two live tokens;
//  2. record: the new token's ApiKeyRecord is created. The auth server
//     accepts it from now on, before any consumer can see it;
//  3. deliver: the Secret is patched with the new token (and its hash,
//     hint and issuance time as annotations);
//  4. supersede: the old record gets validUntil = rotation + gracePeriod,
//     or goes at once without a grace period (syncRecords);
//  5. status reports both (the deferred patch).
//
// Between 2 and 4 the key has two records without validUntil: the rotation
// is in flight. settleRotation finishes or undoes one left by a crash.

// rotate starts a rotation when one is due: on request (a new value of the
// apikeys.dev/rotate annotation) or on schedule (spec.rotation.every after
// the live token's issuance).
func (r *ApiKeyReconciler) rotate(ctx context.Context, p *pass) error {
	if !p.issued() {
		return nil
	}
	if len(p.retiring) > 0 {
		// settleRotation undid a rotation whose record status names: the
		// rotation runs again once that record is gone.
		p.wakeUpAt(p.now)
		return nil
	}
	why := r.rotationDue(p)
	if why == "" {
		return nil
	}
	// A key whose spec.expiresAt has passed gets nothing from a new token:
	// it would be refused at once.
	if exp := r.Policy.ExpiryFor(&p.key.Spec, p.now); !exp.IsZero() && !p.now.Before(exp) {
		return nil
	}
	name := p.live.Spec.SecretName
	secretUID, err := r.mayRotate(ctx, p, name)
	if err != nil {
		return err
	}

	for _, rec := range slices.Clone(p.records) {
		if rec.Name != p.live.Name {
			if err := r.retire(ctx, p, &rec); err != nil {
				return err
			}
		}
	}
	if len(p.retiring) > 0 {
		// Status still names a token that must go first: it goes after
		// this pass's status patch, and the rotation runs in the next pass.
		p.wakeUpAt(p.now)
		return nil
	}
	old := p.live
	rec, err := r.replaceToken(ctx, p, name, secretUID)
	if err != nil {
		return err
	}

	grace := gracePeriodOf(p.key)
	until := "refused from now on"
	if grace > 0 {
		until = "accepted until " + graceEnd(rec, grace).UTC().Format(time.RFC3339)
	}
	r.Recorder.Eventf(p.key, nil, corev1.EventTypeNormal, apikeysv1alpha1.ReasonRotated, "Rotate",
		"Rotated %s: token %s delivered to Secret %s; the previous token %s is %s",
		why, rec.Spec.TokenHint, name, old.Spec.TokenHint, until)
	return nil
}

// replaceToken records a new token for the key and delivers it into the
// Secret name, of UID secretUID ("" if it is gone): steps 2 and 3.
func (r *ApiKeyReconciler) replaceToken(ctx context.Context, p *pass, name string,
	secretUID types.UID) (*apikeysv1alpha1.ApiKeyRecord, error) {
	tok, rec, err := r.newRecord(p, name, p.live.Spec.Issuance+1)
	if err != nil {
		return nil, err
	}
	rec.Spec.SecretUID = string(secretUID)
	if err := r.Create(ctx, rec); err != nil {
		return nil, fmt.Errorf("recording token %s: %w", rec.Spec.TokenHint, err)
	}
	r.created.add(p.key.UID, rec, p.now)
	if secretUID, err = r.redeliverSecret(ctx, p.key, name, tok, rec); err != nil {
		return nil, r.undelivered(ctx, p, rec, err)
	}
	if err := r.pinSecret(ctx, p.key, rec, secretUID); err != nil {
		return nil, err
	}
	p.setRecords(append(p.records, *rec))
	// The Secret holds a token again, even if it was deleted after the
	// last delivery.
	p.delivered = true
	return rec, nil
}

// mayRotate refuses a due rotation that must wait: of a personal key while
// the owner rule is not in force, or into a Secret someone else now holds.
// The rotation then waits, having written nothing, and the live token keeps
// working: edits of scopes, audiences and expiry still reach the records
// (a Secret put in the key's way must not freeze them), and the token's
// expiry stays scheduled. Otherwise it returns the UID of the Secret the
// next token goes into ("" if the Secret is gone and will be created).
func (r *ApiKeyReconciler) mayRotate(ctx context.Context, p *pass, secretName string) (types.UID, error) {
	var secretUID types.UID
	err := r.ownerRuleAllowsRotation(ctx, p)
	if err == nil {
		secretUID, err = r.checkSecretOwner(ctx, p.key, secretName, p.live)
	}
	if _, isStalled := asStalled(err); isStalled {
		if serr := r.holdRotation(ctx, p); serr != nil {
			return "", serr
		}
	}
	return secretUID, err
}

// holdRotation does what a pass whose rotation stalls still must: the
// records follow the spec, the Secret goes at spec.secret.deleteAfter, and
// the live token's expiry stays scheduled.
func (r *ApiKeyReconciler) holdRotation(ctx context.Context, p *pass) error {
	if err := r.syncRecords(ctx, p); err != nil {
		return err
	}
	if err := r.reconcileSecret(ctx, p); err != nil {
		return err
	}
	return r.scheduleExpiry(ctx, p)
}

// undelivered answers a rotation whose new token did not reach the Secret.
// If kube-apiserver refused the write (refused), the token reached nobody:
// its record goes in this pass; a refusal only a change can lift stalls the
// key, any other is retried with backoff. Any other error (a timeout, a
// 500) may hide a write that happened: the record stays, and
// settleRotation reads the Secret in the next pass and decides. Either way
// the live token keeps working, so what the spec says of it still reaches
// its record, however long the Secret's writes keep failing: the pass ends
// as a stalled rotation's does (holdRotation), except that a Secret that may
// hold the new token is left to settleRotation (secretUnsettled: deleteAfter
// could otherwise delete the new token with it).
func (r *ApiKeyReconciler) undelivered(ctx context.Context, p *pass, rec *apikeysv1alpha1.ApiKeyRecord, err error) error {
	// Until a pass settles otherwise, the live token is still the one status
	// reports: its expiry is the key's, not the new token's, which newRecord
	// set.
	p.expiresAt = r.expiryOf(p.key, p.live)
	if refused(err) {
		if derr := r.deleteRecord(ctx, p.key, rec); derr != nil {
			return derr
		}
	} else {
		p.secretUnsettled = true
	}
	if serr := r.holdRotation(ctx, p); serr != nil {
		return serr
	}
	return err
}

// ownerRuleAllowsRotation refuses to rotate a personal key while the owner
// rule is not in force as shipped. A rotation mints a token as the owner,
// and only admission can tell who asked for it (the annotation, or a
// schedule in the spec): with the rule gone, anyone who may edit the key
// could have. A request on the annotation made meanwhile is recorded on the
// live token as answered (by mayRotate's syncRecords), so the rule's return
// does not honour it; the owner asks again. The key looks at the rule again
// after OwnerRuleRecheck. A rule that may stand but whose last change is not
// dated yet (Violation.Pending) drops nothing: the request waits, and the
// key looks again within ownerRulePendingRecheck.
func (r *ApiKeyReconciler) ownerRuleAllowsRotation(ctx context.Context, p *pass) error {
	if p.key.Spec.Identity != apikeysv1alpha1.IdentityOwner {
		return nil
	}
	_, err := r.Policy.OwnerRuleInForceSince(ctx, r.APIReader)
	var v *policy.Violation
	if !errors.As(err, &v) {
		return err // nil, or a read that failed and is retried
	}
	recheck := r.OwnerRuleRecheck
	if recheck <= 0 {
		recheck = time.Minute
	}
	if v.Pending {
		// The rule may stand; kube-apiserver has not yet recorded since
		// when (moments, after an upgrade changed the policy in place).
		// The request waits rather than being dropped.
		p.wakeUpAt(p.now.Add(min(recheck, ownerRulePendingRecheck)))
		return stalled(v.Rule, "a rotation waits until the owner rule is shown in force (the current token keeps working, "+
			"and the request is kept): %s", v.Message)
	}
	p.dropRotateRequest = true
	p.wakeUpAt(p.now.Add(recheck))
	return stalled(v.Rule, "cannot rotate this personal key while nothing checks who asks for it (the current token keeps "+
		"working, and a rotation asked for meanwhile is dropped: ask again once the rule is back): %s", v.Message)
}

// ownerRulePendingRecheck is how soon a rotation that waits for the owner
// policy's status looks again.
const ownerRulePendingRecheck = 5 * time.Second

// rotationDue says why the live token should be replaced now ("" if it
// should not), and asks to wake at the next scheduled rotation.
func (r *ApiKeyReconciler) rotationDue(p *pass) string {
	live := &p.live.Spec
	// A token issued before rotation existed (issuance 0) first has the
	// request in force recorded as answered (syncRecords).
	if want := rotateRequestOf(p.key); want != "" && want != live.RotateRequest && live.Issuance > 0 {
		return fmt.Sprintf("on request (%s=%s)", apikeysv1alpha1.RotateAnnotation, want)
	}
	rot := p.key.Spec.Rotation
	if rot == nil || rot.Every == nil || rot.Every.Duration <= 0 {
		return ""
	}
	at := live.IssuedAt.Add(rot.Every.Duration)
	if p.now.Before(at) {
		p.wakeUpAt(at)
		return ""
	}
	return fmt.Sprintf("on schedule (every %s)", rot.Every.Duration)
}

// graceEnd is when a token superseded by live stops working: at once without
// a grace period, else the rotation time plus the grace period, rounded up to
// the whole second records can hold, so the old token never gets less than
// the grace period (and at most a second more).
func graceEnd(live *apikeysv1alpha1.ApiKeyRecord, grace time.Duration) time.Time {
	if grace <= 0 {
		return live.Spec.IssuedAt.Time
	}
	// issuedAt is the rotation time truncated to the second.
	return live.Spec.IssuedAt.Add(grace + time.Second)
}

// rotateRequestOf is the key's rotation request as a record keeps it: the
// annotation's value, or its hash if it is too long to keep.
func rotateRequestOf(key *apikeysv1alpha1.ApiKey) string {
	v := key.Annotations[apikeysv1alpha1.RotateAnnotation]
	if len(v) <= maxRotateRequest {
		return v
	}
	return token.FormatHash(sha256.Sum256([]byte(v)))
}

// maxRotateRequest is the longest annotation value a record keeps as is.
const maxRotateRequest = 256

// gracePeriodOf is how long a superseded token keeps working.
func gracePeriodOf(key *apikeysv1alpha1.ApiKey) time.Duration {
	if rot := key.Spec.Rotation; rot != nil && rot.GracePeriod != nil && rot.GracePeriod.Duration > 0 {
		return rot.GracePeriod.Duration
	}
	return 0
}

// settleRotation finishes or undoes a rotation a crash cut short. While an
// older record still lacks validUntil, the newest record's token may never
// have reached the Secret: it counts as delivered only if the Secret, read
// from the API server, holds that very token. Nobody but the operator knew
// it, so nobody else can have put it there; the Secret's annotations and
// owner references, which anyone who may edit Secrets can rewrite, decide
// nothing. Otherwise nobody can read that token, so its record goes and the
// older token stays live; the rotation then runs again with a fresh token
// (the request is still unanswered).
func (r *ApiKeyReconciler) settleRotation(ctx context.Context, p *pass) error {
	if !p.issued() || !p.rotationInFlight() {
		return nil
	}
	live := p.live
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: p.key.Namespace, Name: live.Spec.SecretName}, secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err == nil && holdsToken(secret, live) {
		// Delivered: the crash may have come before the record learnt
		// which Secret holds it.
		return r.pinSecret(ctx, p.key, live, secret.UID)
	}
	return r.retire(ctx, p, live)
}

// pinSecret records on key's record rec the UID of the Secret its token
// was delivered to, when the delivery created that Secret (it was gone, or
// immutable), or when the token was delivered before records kept it.
func (r *ApiKeyReconciler) pinSecret(ctx context.Context, key *apikeysv1alpha1.ApiKey, rec *apikeysv1alpha1.ApiKeyRecord,
	uid types.UID) error {
	if rec.Spec.SecretUID == string(uid) {
		return nil
	}
	patch := client.MergeFrom(rec.DeepCopy())
	rec.Spec.SecretUID = string(uid)
	if err := r.Patch(ctx, rec, patch); err != nil {
		return err
	}
	r.created.update(key.UID, rec)
	return nil
}

// rotationInFlight reports whether a record other than the live one lacks
// validUntil: a rotation recorded its new token but has not yet given the
// old one its grace period.
func (p *pass) rotationInFlight() bool {
	for i := range p.records {
		if &p.records[i] != p.live && p.records[i].Spec.ValidUntil == nil {
			return true
		}
	}
	return false
}

// checkSecretOwner refuses to rotate into a Secret someone else now holds,
// and returns the UID of the one it may rotate into ("" if there is none):
// the one live's token went into (ownSecret).
func (r *ApiKeyReconciler) checkSecretOwner(ctx context.Context, key *apikeysv1alpha1.ApiKey, name string,
	live *apikeysv1alpha1.ApiKeyRecord) (types.UID, error) {
	m := secretMeta()
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: name}, m)
	switch {
	case apierrors.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", err
	case !r.ownSecret(m, key, live):
		return "", secretNameTaken(name)
	}
	return m.UID, nil
}

// defaultUnpinnedSlack is how long after its token's record a Secret may have been
// created and still be the one the token went into, for a token delivered
// before records kept the Secret's UID: a rotation that recreates the
// Secret creates the record first, and a pass may be slow. Both times are
// kube-apiserver's.
const defaultUnpinnedSlack = 30 * time.Second

// ownSecret reports whether m is the Secret the operator delivered live's
// token to. Owner references prove nothing (anyone who may create Secrets
// can write the key's UID into one): the record names the Secret by UID.
// A token delivered before records did went into a Secret created no later
// than its record (or just after, by a rotation), so one created since is
// someone else's; the first pass that finds the right one pins it
// (deliveredSecret).
func (r *ApiKeyReconciler) ownSecret(m *metav1.PartialObjectMetadata, key *apikeysv1alpha1.ApiKey,
	live *apikeysv1alpha1.ApiKeyRecord) bool {
	switch {
	case live.Spec.SecretUID != "":
		// The UID is the proof; the owner reference, which anyone who
		// may edit the Secret can strip, adds nothing.
		return string(m.UID) == live.Spec.SecretUID
	case !metav1.IsControlledBy(m, key):
		return false
	}
	slack := r.unpinnedSlack
	if slack <= 0 {
		slack = defaultUnpinnedSlack
	}
	return !m.CreationTimestamp.After(live.CreationTimestamp.Add(slack))
}

func secretNameTaken(name string) error {
	return stalled(apikeysv1alpha1.ReasonSecretNameTaken,
		"cannot rotate: Secret %q is not the one this ApiKey's token was delivered to (it was created since, or belongs "+
			"to something else; the current token keeps working): delete that Secret so the new token can be delivered", name)
}

// redeliverSecret writes a rotated token into the key's Secret, which keeps
// its name (and, when it exists, its identity) so that kubelet refreshes the
// files of pods that mount it, and returns the Secret's UID. The patch
// carries the resourceVersion read just before, so it never overwrites a
// change it did not see. A Secret made immutable by an earlier operator
// version cannot be patched: it is replaced. A missing Secret (deleted
// after delivery) is created again.
func (r *ApiKeyReconciler) redeliverSecret(ctx context.Context, key *apikeysv1alpha1.ApiKey, name, tok string,
	rec *apikeysv1alpha1.ApiKeyRecord) (types.UID, error) {
	if rec.Spec.SecretUID == "" {
		// The Secret was gone when checkSecretOwner looked: only one this
		// delivery creates may take the token.
		return r.createSecret(ctx, key, name, tok, rec)
	}
	m := secretMeta()
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: name}, m)
	if apierrors.IsNotFound(err) {
		return r.createSecret(ctx, key, name, tok, rec)
	}
	if err != nil {
		return "", err
	}
	// checkSecretOwner looked before this rotation's writes, and rec holds
	// the UID it saw; the Secret may have changed hands since. The patch
	// below is pinned to what this read.
	if !r.ownSecret(m, key, rec) {
		return "", secretNameTaken(name)
	}
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"resourceVersion": m.ResourceVersion,
			"annotations":     deliveryAnnotations(key, rec),
		},
		"data": map[string]string{apikeysv1alpha1.SecretTokenKey: base64.StdEncoding.EncodeToString([]byte(tok))},
	})
	if err != nil {
		return "", err
	}
	err = r.Patch(ctx, m, client.RawPatch(types.MergePatchType, body))
	switch {
	case err == nil:
		return m.UID, nil
	case refusedAsImmutable(err):
		// An immutable Secret: replace it. A crash in between leaves no
		// Secret, and settleRotation undoes the rotation.
		if err := r.Delete(ctx, m, client.Preconditions{UID: &m.UID}); client.IgnoreNotFound(err) != nil {
			return "", err
		}
		return r.createSecret(ctx, key, name, tok, rec)
	default:
		return "", secretWriteError(err, tok, "the rotated token's Secret")
	}
}

// createSecret delivers a rotated token into a Secret it creates. A Secret
// of that name that appeared meanwhile is someone's, unless it holds this
// very token (client-go retries a create that kube-apiserver answered with
// a 5xx and Retry-After, though it may have been stored): then it is the
// delivery. Someone else's refuses the write, the rotation is undone
// (undelivered), and the next pass judges that Secret.
func (r *ApiKeyReconciler) createSecret(ctx context.Context, key *apikeysv1alpha1.ApiKey, name, tok string,
	rec *apikeysv1alpha1.ApiKeyRecord) (types.UID, error) {
	uid, err := r.deliverSecret(ctx, key, name, tok, rec)
	if !apierrors.IsAlreadyExists(err) {
		return uid, err
	}
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: name}, secret); err != nil {
		return "", err
	}
	if holdsToken(secret, rec) {
		return secret.UID, nil
	}
	return "", &refusedError{what: "creating the rotated token's Secret", reason: metav1.StatusReasonAlreadyExists}
}

// holdsToken reports whether secret holds rec's token, which proves the
// operator delivered it there: nobody else knew it. The Secret's
// annotations and owner references prove nothing, as anyone who may edit
// Secrets in the namespace can write them. Only the hash is kept.
func holdsToken(secret *corev1.Secret, rec *apikeysv1alpha1.ApiKeyRecord) bool {
	return token.Hash(string(secret.Data[apikeysv1alpha1.SecretTokenKey])) == rec.Spec.TokenHash
}

// refusedAsImmutable reports whether the API server refused a change to a
// Secret's data because the Secret is immutable.
func refusedAsImmutable(err error) bool {
	if !apierrors.IsInvalid(err) {
		return false
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	for _, cause := range status.Status().Details.Causes {
		if cause.Type == metav1.CauseTypeForbidden && cause.Field == "data" {
			return true
		}
	}
	return false
}
