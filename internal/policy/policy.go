// Package policy holds the rules every ApiKey must follow: who a key may
// authenticate as, which groups it may never carry, and how long it may
// live. The admission webhooks enforce them when a key is written; the
// controller enforces them again when it issues (defense in depth), so a key
// that slipped past a missing webhook, or broke a rule after the operator's
// flags changed, never gets a working token.
package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// AttestationAnnotation holds admission's signature over a key's owner. The
// mutating webhook writes it when it stamps spec.owner; the controller
// issues an identity: Owner key only if it verifies.
const AttestationAnnotation = "apikeys.dev/owner-attestation"

// MastersGroup is never carried by a key, whatever the flags say.
const MastersGroup = "system:masters"

// attestationSkew bounds how far the attestation's time may be from the
// object's creationTimestamp, so a copied attestation cannot be replayed on
// a key created later under the same name.
const attestationSkew = time.Minute

// Rules, named in violations so callers can map them to reasons.
const (
	RuleForbiddenGroup = "ForbiddenGroup"
	RuleOwnerNotAttest = "OwnerNotAttested"
	RuleExpiry         = "InvalidExpiry"
	RuleSyntax         = "InvalidSpec"
)

// Violation is a broken rule, with a message that says what to change.
type Violation struct {
	Rule    string
	Message string
}

func (v *Violation) Error() string { return v.Message }

func violation(rule, format string, args ...any) *Violation {
	return &Violation{Rule: rule, Message: fmt.Sprintf(format, args...)}
}

// Policy is the operator's configuration of the rules.
type Policy struct {
	// MaxTTL bounds how long a key may live after issuance; 0 is unlimited.
	MaxTTL time.Duration
	// forbidden are the groups never carried: system:masters and --forbidden-groups.
	forbidden map[string]bool
	// attestationKey signs owners stamped by admission.
	attestationKey []byte
}

// New returns a Policy. attestationKey must be the same for the webhooks
// and the controller; nil disables identity: Owner keys entirely.
func New(maxTTL time.Duration, forbiddenGroups []string, attestationKey []byte) *Policy {
	p := &Policy{MaxTTL: maxTTL, forbidden: map[string]bool{MastersGroup: true}, attestationKey: attestationKey}
	for _, g := range forbiddenGroups {
		if g = strings.TrimSpace(g); g != "" {
			p.forbidden[g] = true
		}
	}
	return p
}

// Forbidden reports whether group may never be carried by a key.
func (p *Policy) Forbidden(group string) bool { return p.forbidden[group] }

// AllowedGroups is groups without the forbidden ones, for stamping an owner
// from a request: a key never carries system:masters, even its creator's.
func (p *Policy) AllowedGroups(groups []string) []string {
	out := make([]string, 0, len(groups))
	for _, g := range groups {
		if !p.forbidden[g] {
			out = append(out, g)
		}
	}
	return out
}

// CheckOwnerGroups refuses an owner that claims a forbidden group.
func (p *Policy) CheckOwnerGroups(owner *apikeysv1alpha1.Owner) error {
	if owner == nil {
		return nil
	}
	for _, g := range owner.Groups {
		if p.forbidden[g] {
			return violation(RuleForbiddenGroup,
				"spec.owner.groups: %q is never carried by an ApiKey (system:masters and the operator's --forbidden-groups): remove it", g)
		}
	}
	return nil
}

// Attest signs owner for the key namespace/name, created at at.
func (p *Policy) Attest(namespace, name string, owner *apikeysv1alpha1.Owner, at time.Time) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	return "v1." + ts + "." + base64.RawURLEncoding.EncodeToString(p.mac(namespace, name, owner, ts))
}

// CheckAttestation verifies that key's owner was stamped (or vetted) by
// admission: the annotation must be admission's signature over this
// namespace, name and owner, made when the key was created.
func (p *Policy) CheckAttestation(key *apikeysv1alpha1.ApiKey) error {
	const msg = "identity Owner needs spec.owner stamped by the operator's admission webhook, and this key's owner was not " +
		"(is the webhook installed?): recreate the key with the webhook in place, or use identity Key"
	if len(p.attestationKey) == 0 || key.Spec.Owner == nil {
		return violation(RuleOwnerNotAttest, msg)
	}
	parts := strings.Split(key.Annotations[AttestationAnnotation], ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return violation(RuleOwnerNotAttest, msg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, p.mac(key.Namespace, key.Name, key.Spec.Owner, parts[1])) {
		return violation(RuleOwnerNotAttest, msg)
	}
	unix, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return violation(RuleOwnerNotAttest, msg)
	}
	if d := key.CreationTimestamp.Sub(time.Unix(unix, 0)); d > attestationSkew || d < -attestationSkew {
		return violation(RuleOwnerNotAttest, msg)
	}
	return nil
}

func (p *Policy) mac(namespace, name string, owner *apikeysv1alpha1.Owner, ts string) []byte {
	ownerJSON, _ := json.Marshal(owner)
	m := hmac.New(sha256.New, p.attestationKey)
	for _, field := range [][]byte{[]byte(namespace), []byte(name), ownerJSON, []byte(ts)} {
		_, _ = fmt.Fprintf(m, "%d:", len(field))
		_, _ = m.Write(field)
	}
	return m.Sum(nil)
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

// CheckExpiry refuses an expiry that is not after now (for a key not issued
// yet) or that lies beyond issuedAt + MaxTTL.
func (p *Policy) CheckExpiry(spec *apikeysv1alpha1.ApiKeySpec, issuedAt time.Time, issued bool, now time.Time) error {
	if spec.ExpiresAt != nil && spec.TTL != nil {
		return violation(RuleSyntax, "set at most one of spec.expiresAt and spec.ttl")
	}
	if spec.TTL != nil && spec.TTL.Duration <= 0 {
		return violation(RuleExpiry, "spec.ttl must be positive")
	}
	expiresAt := p.ExpiryFor(spec, issuedAt)
	if expiresAt.IsZero() {
		return nil
	}
	if !issued && !expiresAt.After(now) {
		return violation(RuleExpiry, "spec.expiresAt %s is not in the future: set a later time or use spec.ttl",
			expiresAt.UTC().Format(time.RFC3339))
	}
	if p.MaxTTL > 0 && expiresAt.Sub(issuedAt) > p.MaxTTL {
		return violation(RuleExpiry,
			"the key would live %s, longer than the operator's --max-ttl of %s: shorten spec.ttl or spec.expiresAt",
			expiresAt.Sub(issuedAt).Round(time.Second), p.MaxTTL)
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
	return nil
}
