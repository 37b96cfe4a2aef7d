// Package policy holds the rules every ApiKey must follow: who a key may
// authenticate as, which groups it may never carry, and how long it may
// live. The admission webhooks enforce them when a key is written; the
// controller enforces them again when it issues (defense in depth), so a key
// that slipped past a missing webhook, or broke a rule after the operator's
// flags changed, never gets a working token.
package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// MastersGroup is never carried by a key, whatever the flags say.
const MastersGroup = "system:masters"

// serviceAccountPrefix starts every service account's username.
const serviceAccountPrefix = "system:serviceaccount:"

// keyUserPrefix starts the username of every identity: Key key.
const keyUserPrefix = "apikey:"

// Rules, named in violations by the Stalled reason each one gives a key.
const (
	RuleForbiddenGroup  = apikeysv1alpha1.ReasonForbiddenGroup
	RuleOwnerNotAllowed = apikeysv1alpha1.ReasonOwnerNotAllowed
	RuleOwnerPolicy     = apikeysv1alpha1.ReasonOwnerPolicyNotInForce
	RuleExpiry          = apikeysv1alpha1.ReasonInvalidExpiry
	RuleSyntax          = apikeysv1alpha1.ReasonInvalidSpec
)

// Violation is a broken rule, with a message that says what to change.
type Violation struct {
	Rule    string
	Message string
	// Pending is set when the rule may well be met but kube-apiserver has
	// not yet recorded what shows it (a policy's status behind its
	// generation): the check is worth asking again soon, and what waits
	// on it is kept, not dropped.
	Pending bool
}

func (v *Violation) Error() string { return v.Message }

func violation(rule, format string, args ...any) *Violation {
	return &Violation{Rule: rule, Message: fmt.Sprintf(format, args...)}
}

// Options configure the rules.
type Options struct {
	// MaxTTL bounds how long a key may live after issuance; 0 is unlimited.
	MaxTTL time.Duration
	// ForbiddenGroups are never carried by a key, besides system:masters.
	ForbiddenGroups []string
	// OwnerRequesters are the service accounts that may create identity:
	// Owner keys (for themselves, or for whom they may impersonate).
	OwnerRequesters []string
	// OwnerPolicyName and OwnerPolicyBindingName name the
	// ValidatingAdmissionPolicy that enforces the owner rule in
	// kube-apiserver, and its binding.
	OwnerPolicyName, OwnerPolicyBindingName string
}

// Policy is the operator's configuration of the rules.
type Policy struct {
	// MaxTTL bounds how long a key may live after issuance; 0 is unlimited.
	MaxTTL time.Duration
	// forbidden are the groups never carried: system:masters and --forbidden-groups.
	forbidden map[string]bool
	// ownerRequesters may create Owner keys although they are service accounts.
	ownerRequesters []string
	// policyName and bindingName locate the owner rule in the cluster.
	policyName, bindingName string
}

// New returns the rules o describes.
func New(o Options) *Policy {
	p := &Policy{
		MaxTTL:      o.MaxTTL,
		forbidden:   map[string]bool{MastersGroup: true},
		policyName:  o.OwnerPolicyName,
		bindingName: o.OwnerPolicyBindingName,
	}
	for _, g := range o.ForbiddenGroups {
		if g = strings.TrimSpace(g); g != "" {
			p.forbidden[g] = true
		}
	}
	for _, u := range o.OwnerRequesters {
		if u = strings.TrimSpace(u); u != "" && !slices.Contains(p.ownerRequesters, u) {
			p.ownerRequesters = append(p.ownerRequesters, u)
		}
	}
	return p
}

// Forbidden reports whether group may never be carried by a key.
func (p *Policy) Forbidden(group string) bool { return p.forbidden[group] }

// forbiddenGroups lists the forbidden groups, sorted.
func (p *Policy) forbiddenGroups() []string {
	out := make([]string, 0, len(p.forbidden))
	for g := range p.forbidden {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// HeaderSafe reports whether a username or group name reaches a backend
// unchanged in a forward-auth header: valid UTF-8, no control character
// (net/http turns CR and LF into spaces, HTTP/2 drops the whole header), and
// no space at either end (proxies trim it, so "alice " would arrive as
// "alice"), and not empty (a groups header would read "a,,b"). The defaults
// policy's ownerGroups filter says the same in CEL; the controller leaves
// such groups out of a key's records.
func HeaderSafe(s string) bool {
	if s == "" || !utf8.ValidString(s) || s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// AllowedGroups is groups without those a key may not carry: a key never
// carries system:masters, even its creator's, nor a group whose name a proxy
// would split at a comma or change (HeaderSafe). It is what the defaults
// policy's ownerGroups stamps from a request, for writers that go around
// admission (the bench writes keys straight into etcd).
func (p *Policy) AllowedGroups(groups []string) []string {
	out := make([]string, 0, len(groups))
	for _, g := range groups {
		if !p.forbidden[g] && !strings.Contains(g, ",") && HeaderSafe(g) {
			out = append(out, g)
		}
	}
	return out
}

// CheckOwner re-checks, from the owner alone, what the admission policy
// decided from the request: an identity: Owner key names an owner, who is a
// person (not a service account, unless listed in --owner-requesters, and
// not one of this operator's keys) and carries no forbidden group.
func (p *Policy) CheckOwner(owner *apikeysv1alpha1.Owner) error {
	if owner == nil {
		return violation(RuleOwnerNotAllowed,
			"identity Owner needs spec.owner, stamped by the operator's admission from the creating user: "+
				"recreate the key with admission in place, or use identity Key")
	}
	switch {
	case strings.HasPrefix(owner.Username, serviceAccountPrefix) && !slices.Contains(p.ownerRequesters, owner.Username):
		return violation(RuleOwnerNotAllowed,
			"identity Owner keys are for people, and %q is a service account not listed in the operator's "+
				"--owner-requesters: use identity Key", owner.Username)
	case strings.HasPrefix(owner.Username, keyUserPrefix):
		return violation(RuleOwnerNotAllowed,
			"identity Owner keys are for people, and %q is an API key: use identity Key", owner.Username)
	case !HeaderSafe(owner.Username):
		return violation(RuleOwnerNotAllowed,
			"spec.owner.username %q has a control character or a space at either end, which would change on its way "+
				"to a backend in a forward-auth header: use identity Key", owner.Username)
	}
	for _, g := range owner.Groups {
		if p.forbidden[g] {
			return violation(RuleForbiddenGroup,
				"spec.owner.groups: %q is never carried by an ApiKey (system:masters and the operator's --forbidden-groups): remove it", g)
		}
		if strings.Contains(g, ",") {
			return violation(RuleForbiddenGroup,
				"spec.owner.groups: %q contains ',', which proxies would split into two groups: remove it", g)
		}

	}
	return nil
}

// ExpiryFor is when a token issued at issuedAt expires: spec.expiresAt,
// issuedAt+spec.ttl, or issuedAt+MaxTTL when neither is set. Zero: never.
func (p *Policy) ExpiryFor(spec *apikeysv1alpha1.ApiKeySpec, issuedAt time.Time) time.Time {
	switch {
	case spec.ExpiresAt != nil:
		return spec.ExpiresAt.Time
	case spec.TTL != nil:
		return issuedAt.Add(spec.TTL.Duration).Truncate(time.Second)
	case p.MaxTTL > 0:
		return issuedAt.Add(p.MaxTTL).Truncate(time.Second)
	}
	return time.Time{}
}

// TokenExpiry is when the token issued at issuedAt stops working:
// ExpiryFor, but never later than issuedAt+MaxTTL. A token's life is
// bounded from its own issuance, so a spec.expiresAt moved later after a
// rotation (CheckExpiry measures it from the live token's issuance) does
// not stretch a token the rotation superseded. Zero: never.
func (p *Policy) TokenExpiry(spec *apikeysv1alpha1.ApiKeySpec, issuedAt time.Time) time.Time {
	exp := p.ExpiryFor(spec, issuedAt)
	if p.MaxTTL <= 0 {
		return exp
	}
	if limit := issuedAt.Add(p.MaxTTL).Truncate(time.Second); exp.IsZero() || exp.After(limit) {
		return limit
	}
	return exp
}

// CheckExpiry refuses an expiry that lies beyond the token's issuance plus
// MaxTTL, or, for a key that has no token yet (issuedAt nil: it would be
// issued now), one that is not after now.
func (p *Policy) CheckExpiry(spec *apikeysv1alpha1.ApiKeySpec, issuedAt *metav1.Time, now time.Time) error {
	if spec.ExpiresAt != nil && spec.TTL != nil {
		return violation(RuleSyntax, "set at most one of spec.expiresAt and spec.ttl")
	}
	if spec.TTL != nil && spec.TTL.Duration <= 0 {
		return violation(RuleExpiry, "spec.ttl must be positive")
	}
	issued := now
	if issuedAt != nil {
		issued = issuedAt.Time
	}
	expiresAt := p.ExpiryFor(spec, issued)
	if expiresAt.IsZero() {
		return nil
	}
	if issuedAt == nil && !expiresAt.After(now) {
		return violation(RuleExpiry, "spec.expiresAt %s is not in the future: set a later time or use spec.ttl",
			expiresAt.UTC().Format(time.RFC3339))
	}
	if p.MaxTTL > 0 && expiresAt.Sub(issued) > p.MaxTTL {
		return violation(RuleExpiry,
			"the key would live %s, longer than the operator's --max-ttl of %s: shorten spec.ttl or spec.expiresAt",
			expiresAt.Sub(issued).Round(time.Second), p.MaxTTL)
	}
	return nil
}

var scopePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9:._/*-]{0,63}$`)

// CheckSyntax re-checks what the CRD's schema enforces, for objects that
// reached the operator some other way.
func CheckSyntax(spec *apikeysv1alpha1.ApiKeySpec) error {
	if len(spec.Scopes) > 64 {
		return violation(RuleSyntax, "spec.scopes: at most 64 scopes")
	}
	for i, s := range spec.Scopes {
		if !scopePattern.MatchString(s) {
			return violation(RuleSyntax, "spec.scopes[%d]: %q must match %s", i, s, scopePattern)
		}
	}
	if len(spec.Audiences) > 16 {
		return violation(RuleSyntax, "spec.audiences: at most 16 audiences")
	}
	for i, a := range spec.Audiences {
		if a == "" || len(a) > 253 {
			return violation(RuleSyntax, "spec.audiences[%d]: must be 1 to 253 characters", i)
		}
	}
	if rot := spec.Rotation; rot != nil && rot.Every != nil {
		if rot.Every.Duration < MinRotationEvery {
			return violation(RuleSyntax, "spec.rotation.every must be at least %s", MinRotationEvery)
		}
		if rot.GracePeriod != nil && rot.GracePeriod.Duration >= rot.Every.Duration {
			return violation(RuleSyntax, "spec.rotation.gracePeriod must be shorter than spec.rotation.every: a key has at most two live tokens")
		}
	}
	// The Secret is written at each issuance: metadata it would refuse is
	// caught here, before a token is minted for it.
	secretMeta := field.NewPath("spec", "secret")
	errs := metav1validation.ValidateLabels(spec.Secret.Labels, secretMeta.Child("labels"))
	errs = append(errs, apivalidation.ValidateAnnotations(spec.Secret.Annotations, secretMeta.Child("annotations"))...)
	if len(errs) > 0 {
		return violation(RuleSyntax, "%s", errs.ToAggregate().Error())
	}
	return nil
}

// MinRotationEvery is the shortest spec.rotation.every.
const MinRotationEvery = time.Hour
