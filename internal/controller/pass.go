package controller

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
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

	// expiresAt is when the live (or next) token expires; nil means never.
	expiresAt *metav1.Time
	// wakeAt is the earliest instant a pass must run again without any
	// event: an expiry or a Secret's deleteAfter deadline.
	wakeAt time.Time
}

func (r *ApiKeyReconciler) newPass(key *apikeysv1alpha1.ApiKey) *pass {
	return &pass{key: key, base: key.DeepCopy(), now: r.now()}
}

// wakeUpAt asks for another pass at t (the earliest of all asks wins).
func (p *pass) wakeUpAt(t time.Time) {
	if p.wakeAt.IsZero() || t.Before(p.wakeAt) {
		p.wakeAt = t
	}
}

// issued reports whether a token has been minted and delivered.
func (p *pass) issued() bool {
	return p.key.Status.RecordName != "" && p.key.Status.SecretName != ""
}

// validate re-checks the rules the API server enforces (in case a rule was
// bypassed or the operator's flags changed) and those only the operator can
// know, such as --max-ttl. A key that breaks one gets no token, and a token it
// already has stops working at once.
func (r *ApiKeyReconciler) validate(ctx context.Context, p *pass) error {
	err := r.checkSpec(p)
	if err == nil {
		p.key.Status.Username = usernameFor(p.key)
		return nil
	}
	if p.key.Status.RecordName != "" {
		if derr := r.deleteRecords(ctx, p.key); derr != nil {
			return derr
		}
		clearIssuance(&p.key.Status)
	}
	return err
}

func (r *ApiKeyReconciler) checkSpec(p *pass) error {
	spec := &p.key.Spec
	if err := token.ValidPrefix(prefixOf(p.key)); err != nil {
		return stalled(ReasonInvalidSpec, "spec.prefix: %v", err)
	}
	if spec.Identity == apikeysv1alpha1.IdentityOwner {
		return stalled(ReasonOwnerNeedsAdmission,
			"identity Owner is not supported yet: it needs the admission webhook to stamp spec.owner from the creating user; use identity Key")
	}
	if spec.Rotation != nil {
		return stalled(ReasonInvalidSpec, "spec.rotation is not supported yet: remove it")
	}
	if spec.ExpiresAt != nil && spec.TTL != nil {
		return stalled(ReasonInvalidSpec, "set at most one of spec.expiresAt and spec.ttl")
	}
	if spec.TTL != nil && spec.TTL.Duration <= 0 {
		return stalled(ReasonInvalidExpiry, "spec.ttl must be positive")
	}

	issuedAt := p.now
	if p.key.Status.IssuedAt != nil {
		issuedAt = p.key.Status.IssuedAt.Time
	}
	expiresAt := r.expiryFor(spec, issuedAt)
	if expiresAt.IsZero() {
		return nil
	}
	if p.key.Status.IssuedAt == nil && !expiresAt.After(p.now) {
		return stalled(ReasonInvalidExpiry, "spec.expiresAt %s is not in the future: set a later time or use spec.ttl",
			expiresAt.UTC().Format(time.RFC3339))
	}
	if r.MaxTTL > 0 && expiresAt.Sub(issuedAt) > r.MaxTTL {
		return stalled(ReasonInvalidExpiry,
			"the key would live %s, longer than the operator's --max-ttl of %s: shorten spec.ttl or spec.expiresAt",
			expiresAt.Sub(issuedAt).Round(time.Second), r.MaxTTL)
	}
	p.expiresAt = &metav1.Time{Time: expiresAt}
	return nil
}

// expiryFor is when a token issued at issuedAt expires: spec.expiresAt,
// issuedAt+spec.ttl, or issuedAt+--max-ttl when neither is set. Zero means
// never (no expiry asked and --max-ttl=0).
func (r *ApiKeyReconciler) expiryFor(spec *apikeysv1alpha1.ApiKeySpec, issuedAt time.Time) time.Time {
	switch {
	case spec.ExpiresAt != nil:
		return spec.ExpiresAt.Time
	case spec.TTL != nil:
		return issuedAt.Add(spec.TTL.Duration).Truncate(time.Second)
	case r.MaxTTL > 0:
		return issuedAt.Add(r.MaxTTL).Truncate(time.Second)
	}
	return time.Time{}
}

// watchExpiry notes whether the key has expired and, if not, wakes the
// controller at the expiry instant: no polling loop.
func (r *ApiKeyReconciler) watchExpiry(_ context.Context, p *pass) error {
	exp := p.key.Status.ExpiresAt
	if exp == nil || !p.now.Before(exp.Time) {
		return nil
	}
	p.wakeUpAt(exp.Time)
	return nil
}

// expired reports whether the live token is past its expiry.
func (p *pass) expired() bool {
	exp := p.key.Status.ExpiresAt
	return p.issued() && exp != nil && !p.now.Before(exp.Time)
}

func prefixOf(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Prefix == "" {
		return apikeysv1alpha1.DefaultPrefix
	}
	return key.Spec.Prefix
}

// usernameFor is the user a key authenticates as.
func usernameFor(key *apikeysv1alpha1.ApiKey) string {
	return fmt.Sprintf("apikey:%s:%s", key.Namespace, key.Name)
}

// groupsFor are the groups a key authenticates with.
func groupsFor(key *apikeysv1alpha1.ApiKey) []string {
	return []string{"apikeys", "apikeys:" + key.Namespace}
}

// clearIssuance forgets the live token, so the next valid pass mints afresh.
func clearIssuance(st *apikeysv1alpha1.ApiKeyStatus) {
	st.RecordName = ""
	st.TokenHint = ""
	st.IssuedAt = nil
	st.ExpiresAt = nil
	st.SecretName = ""
	st.SecretDeletedAt = nil
}
