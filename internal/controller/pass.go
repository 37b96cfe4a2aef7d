package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// pass is one reconcile of one ApiKey: what it observed and what it decided.
// Status is computed from it at the end (apikey_status.go).
type pass struct {
	key *apikeysv1alpha1.ApiKey
	// base is the ApiKey as last written; the deferred status patch is
	// computed against it.
	base *apikeysv1alpha1.ApiKey
	now  time.Time

	// records are the key's ApiKeyRecords. They, not status, say which
	// tokens exist: only the operator can write them.
	records []apikeysv1alpha1.ApiKeyRecord
	// live is the record of the current token, nil before issuance. A
	// record is created only after its token was delivered to the Secret.
	live *apikeysv1alpha1.ApiKeyRecord

	// forgery is what checkStatus found wrong with the status it read:
	// reported (Stalled), never obeyed, and no reason to stop the pass.
	forgery *stalledError

	// expiresAt is when the live (or next) token expires; nil means never.
	expiresAt *metav1.Time
	// expiringSoon: the live token expires within the warning window.
	expiringSoon bool
	// delivered: this pass wrote the live token into its Secret.
	delivered bool
	// secretUnsettled: a write of a rotated token into the Secret failed in
	// a way that may hide its success; the next pass settles it
	// (settleRotation), and until then nothing deletes the Secret.
	secretUnsettled bool
	// dropRotateRequest: the rotation asked for now is refused (the owner
	// rule is not in force), and syncRecords records it on the live token
	// as answered.
	dropRotateRequest bool
	// secretDeletedAt is when the live token's Secret was found gone (or
	// deleted by spec.secret.deleteAfter); nil while it exists.
	secretDeletedAt *metav1.Time
	// validated: the spec follows every rule; the key may hold a token.
	validated bool
	// revoked: the spec breaks a rule, so every record of the key goes
	// once status stops naming them (finishPass).
	revoked bool
	// retiring are records status still names that go once the status
	// patch stops naming them (finishPass). A pass that retires one does
	// not rotate, so a key never holds more than two tokens.
	retiring []apikeysv1alpha1.ApiKeyRecord
	// wakeAt is the earliest instant a pass must run again without any
	// event: an expiry or a Secret's deleteAfter deadline.
	wakeAt time.Time
}

func (r *ApiKeyReconciler) newPass(key *apikeysv1alpha1.ApiKey) *pass {
	return &pass{key: key, base: key.DeepCopy(), now: r.now(), secretDeletedAt: key.Status.SecretDeletedAt}
}

// wakeUpAt asks for another pass at t (the earliest of all asks wins).
func (p *pass) wakeUpAt(t time.Time) {
	if p.wakeAt.IsZero() || t.Before(p.wakeAt) {
		p.wakeAt = t
	}
}

// issued reports whether a token has been minted and delivered.
func (p *pass) issued() bool { return p.live != nil }

// setRecords notes the key's records and picks the live one: of those that
// are not a superseded token in its grace period, the latest issuance.
func (p *pass) setRecords(records []apikeysv1alpha1.ApiKeyRecord) {
	p.records, p.live = records, nil
	for i := range records {
		rec := &records[i]
		if rec.Spec.ValidUntil != nil {
			continue
		}
		if p.live == nil || newerIssuance(&rec.Spec, &p.live.Spec) ||
			(!newerIssuance(&p.live.Spec, &rec.Spec) && rec.Name > p.live.Name) {
			p.live = rec
		}
	}
}

// newerIssuance orders tokens by their issuance count, then their issuance
// time (records written before rotation existed count 0).
func newerIssuance(a, b *apikeysv1alpha1.ApiKeyRecordSpec) bool {
	if a.Issuance != b.Issuance {
		return a.Issuance > b.Issuance
	}
	return a.IssuedAt.After(b.IssuedAt.Time)
}

// validate re-checks the rules the API server enforces (in case a rule was
// bypassed or the operator's flags changed) and those only the operator can
// know, such as --max-ttl. A key that breaks one gets no token, and a token it
// already has stops working at once: its records end now (endRecords), and
// are deleted right after the status patch that stops naming them
// (finishPass).
func (r *ApiKeyReconciler) validate(ctx context.Context, p *pass) error {
	err := r.checkSpec(ctx, p)
	if err == nil {
		p.validated = true
		return nil
	}
	if _, isStalled := asStalled(err); isStalled && len(p.records) > 0 {
		if eerr := r.endRecords(ctx, p); eerr != nil {
			return eerr
		}
		p.setRecords(nil)
		p.revoked = true
	}
	return err
}

// endRecords gives each of the pass's records validUntil now, so the auth
// server refuses its token at once. The deletion waits for the status patch
// (status never names a record that is gone), and that patch is not the
// operator's alone to make succeed: a namespace editor can grow the key
// until any write of it is too large. Revocation must not wait on it.
func (r *ApiKeyReconciler) endRecords(ctx context.Context, p *pass) error {
	now := metav1.NewTime(p.now.Truncate(time.Second))
	for i := range p.records {
		rec := &p.records[i]
		if rec.Spec.ValidUntil != nil && !rec.Spec.ValidUntil.After(now.Time) {
			continue
		}
		patch := client.MergeFrom(rec.DeepCopy())
		rec.Spec.ValidUntil = &now
		if err := r.Patch(ctx, rec, patch); err != nil {
			return err
		}
		r.created.update(p.key.UID, rec)
	}
	return nil
}

// retire removes rec from the pass's records and deletes it: at once if
// status does not name it, else right after the status patch that stops
// naming it (finishPass), so that status never names a record that is gone:
// a status that does is one the operator did not write.
func (r *ApiKeyReconciler) retire(ctx context.Context, p *pass, rec *apikeysv1alpha1.ApiKeyRecord) error {
	gone := *rec
	kept := make([]apikeysv1alpha1.ApiKeyRecord, 0, len(p.records))
	for i := range p.records {
		if p.records[i].Name != gone.Name {
			kept = append(kept, p.records[i])
		}
	}
	p.setRecords(kept)
	if p.base.Status.RecordName == gone.Name {
		p.retiring = append(p.retiring, gone)
		return nil
	}
	return r.deleteRecord(ctx, p.key, &gone)
}

// deleteRecord deletes rec, if it is still the record it was.
func (r *ApiKeyReconciler) deleteRecord(ctx context.Context, key *apikeysv1alpha1.ApiKey, rec *apikeysv1alpha1.ApiKeyRecord) error {
	if err := r.Delete(ctx, rec, client.Preconditions{UID: &rec.UID}); client.IgnoreNotFound(err) != nil {
		return err
	}
	r.created.forget(key.UID, rec.Name)
	return nil
}

func (r *ApiKeyReconciler) checkSpec(ctx context.Context, p *pass) error {
	key := p.key
	spec := &key.Spec
	if err := token.ValidPrefix(prefixOf(key)); err != nil {
		return stalled(apikeysv1alpha1.ReasonInvalidSpec, "spec.prefix: %v", err)
	}
	if err := policy.CheckSyntax(spec); err != nil {
		return asStalledViolation(err)
	}
	if spec.Identity == apikeysv1alpha1.IdentityOwner {
		if err := r.Policy.CheckOwner(spec.Owner); err != nil {
			return asStalledViolation(err)
		}
		// Who created the key is known only to admission: before the first
		// token, make sure the owner rule was there to check it.
		if !p.issued() {
			since, err := r.Policy.OwnerRuleInForceSince(ctx, r.APIReader)
			if v := (*policy.Violation)(nil); errors.As(err, &v) && v.Pending {
				// The status, when it comes, dates the rule after this key:
				// look again then, to say so exactly.
				p.wakeUpAt(p.now.Add(ownerRulePendingRecheck))
				return stalled(v.Rule, "this key was created before the owner rule's last change is dated, so it will "+
					"not be issued: recreate it once the policy's status shows that change. %s", v.Message)
			}
			if err == nil {
				err = policy.CheckOwnerRuleCovers(since, key.CreationTimestamp.Time)
			}
			if err != nil {
				return asStalledViolation(err)
			}
		}
	}

	// Expiry is measured from the record's own issuance, never from status.
	var issuedAt *metav1.Time
	issued := p.now
	if p.issued() {
		issuedAt, issued = &p.live.Spec.IssuedAt, p.live.Spec.IssuedAt.Time
	}
	if err := r.Policy.CheckExpiry(spec, issuedAt, p.now); err != nil {
		return asStalledViolation(err)
	}
	if exp := r.Policy.TokenExpiry(spec, issued); !exp.IsZero() {
		p.expiresAt = &metav1.Time{Time: exp}
	}
	return nil
}

// asStalledViolation turns a broken policy rule into a stalled key whose
// reason names the rule.
func asStalledViolation(err error) error {
	var v *policy.Violation
	if errors.As(err, &v) {
		return stalled(v.Rule, "%s", v.Message)
	}
	return err
}

// scheduleExpiry wakes the controller when the live token's expiry warning
// is due and at its expiry instant: no polling loop.
func (r *ApiKeyReconciler) scheduleExpiry(_ context.Context, p *pass) error {
	if !p.issued() || p.expiresAt == nil || !p.now.Before(p.expiresAt.Time) {
		return nil
	}
	warnAt := p.expiresAt.Add(-expiryWarning(p.expiresAt.Sub(p.live.Spec.IssuedAt.Time)))
	if p.now.Before(warnAt) {
		p.wakeUpAt(warnAt)
	} else {
		p.expiringSoon = true
	}
	p.wakeUpAt(p.expiresAt.Time)
	return nil
}

// expiryWarning is how long before expiry a token of the given lifetime is
// reported ExpiringSoon: 7 days, or a tenth of its lifetime if shorter.
func expiryWarning(lifetime time.Duration) time.Duration {
	return min(7*24*time.Hour, lifetime/10)
}

// expired reports whether the live token is past its expiry.
func (p *pass) expired() bool {
	return p.issued() && p.expiresAt != nil && !p.now.Before(p.expiresAt.Time)
}

func prefixOf(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Prefix == "" {
		return apikeysv1alpha1.DefaultPrefix
	}
	return key.Spec.Prefix
}

// usernameFor is the user a key authenticates as: its owner for identity
// Owner, otherwise apikey:<namespace>:<name>.
func usernameFor(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Identity == apikeysv1alpha1.IdentityOwner && key.Spec.Owner != nil {
		return key.Spec.Owner.Username
	}
	return fmt.Sprintf("apikey:%s:%s", key.Namespace, key.Name)
}

// uidFor is the user UID a key authenticates with: its owner's for identity
// Owner (none if the owner had none), otherwise the ApiKey's own UID.
func uidFor(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Identity == apikeysv1alpha1.IdentityOwner {
		if key.Spec.Owner == nil {
			return ""
		}
		return key.Spec.Owner.UID
	}
	return string(key.UID)
}

func headerUnsafe(name string) bool { return !policy.HeaderSafe(name) }

// groupsFor are the groups a key authenticates with: its owner's groups at
// creation for identity Owner (less any a header would change), otherwise
// apikeys and apikeys:<namespace>.
func groupsFor(key *apikeysv1alpha1.ApiKey) []string {
	if key.Spec.Identity == apikeysv1alpha1.IdentityOwner && key.Spec.Owner != nil {
		groups := key.Spec.Owner.Groups
		if slices.ContainsFunc(groups, headerUnsafe) {
			// Left out, as the defaults policy leaves them out of the
			// owner it stamps (a key stamped before it did keeps working).
			groups = slices.DeleteFunc(slices.Clone(groups), headerUnsafe)
		}
		return groups
	}
	return []string{"apikeys", "apikeys:" + key.Namespace}
}
