package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	key := p.key
	spec := &key.Spec
	if err := token.ValidPrefix(prefixOf(key)); err != nil {
		return stalled(ReasonInvalidSpec, "spec.prefix: %v", err)
	}
	if spec.Rotation != nil {
		return stalled(ReasonInvalidSpec, "spec.rotation is not supported yet: remove it")
	}
	if err := policy.CheckSyntax(spec); err != nil {
		return asStalledViolation(err)
	}
	if spec.Identity == apikeysv1alpha1.IdentityOwner {
		if err := r.Policy.CheckAttestation(key); err != nil {
			return asStalledViolation(err)
		}
		if err := r.Policy.CheckOwnerGroups(spec.Owner); err != nil {
			return asStalledViolation(err)
		}
	}

	issuedAt := p.now
	if key.Status.IssuedAt != nil {
		issuedAt = key.Status.IssuedAt.Time
	}
	if err := r.Policy.CheckExpiry(spec, issuedAt, key.Status.IssuedAt != nil, p.now); err != nil {
		return asStalledViolation(err)
	}
	if exp := r.Policy.ExpiryFor(spec, issuedAt); !exp.IsZero() {
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

// usernameFor is the user a key authenticates as: its owner for identity
// Owner, otherwise apikey:<namespace>:<name>.
func usernameFor(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Identity == apikeysv1alpha1.IdentityOwner && key.Spec.Owner != nil {
		return key.Spec.Owner.Username
	}
	return fmt.Sprintf("apikey:%s:%s", key.Namespace, key.Name)
}

// uidFor is the user UID a key authenticates with: its owner's for identity
// Owner, otherwise none (the auth server then reports the ApiKey's UID).
func uidFor(key *apikeysv1alpha1.ApiKey) string {
	if key.Spec.Identity == apikeysv1alpha1.IdentityOwner && key.Spec.Owner != nil {
		return key.Spec.Owner.UID
	}
	return ""
}

// groupsFor are the groups a key authenticates with: its owner's groups at
// creation for identity Owner, otherwise apikeys and apikeys:<namespace>.
func groupsFor(key *apikeysv1alpha1.ApiKey) []string {
	if key.Spec.Identity == apikeysv1alpha1.IdentityOwner && key.Spec.Owner != nil {
		return key.Spec.Owner.Groups
	}
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
