// Package v1alpha1 holds the admission webhooks for apikeys.dev/v1alpha1
// ApiKeys: the mutating one puts back an owner an update dropped, the
// validating one refuses specs with a message the user can act on. What a
// new key gets from its create (owner, Secret name, finalizer) is stamped
// inside kube-apiserver by a MutatingAdmissionPolicy
// (internal/policy/defaults_policy.yaml), with no call to the operator.
//
// Neither decides who a key may be. Anyone on the network can call these
// endpoints with any userInfo, so nothing they answer may help a caller get
// a key issued as someone else: the owner rule is a ValidatingAdmissionPolicy
// inside kube-apiserver (internal/policy/owner_policy.yaml), and the
// controller checks that policy was in force before it issues an Owner key.
// The webhooks make no API call, so a request costs the same whatever its
// size beyond decoding it.
package v1alpha1

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	admissionv1 "k8s.io/api/admission/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
)

// kube-apiserver calls the webhooks only when they have something to do
// (matchConditions, evaluated in kube-apiserver):
//   - the mutating one only on an update that drops the owner, to put it
//     back (creates are the defaults policy's, in kube-apiserver);
//   - the validating one only when a key sets what the CRD's schema cannot
//     judge: a lifetime (spec.ttl or spec.expiresAt, against the clock and
//     --max-ttl) or Secret labels or annotations (their syntax). Everything
//     else is checked by the schema and its CEL rules, and again by the
//     controller, which stalls a key that slipped past.
//
// +kubebuilder:webhook:path=/mutate-apikeys-dev-v1alpha1-apikey,mutating=true,failurePolicy=fail,sideEffects=None,groups=apikeys.dev,resources=apikeys,verbs=update,versions=v1alpha1,name=mapikey-v1alpha1.apikeys.dev,admissionReviewVersions=v1,patch=`{"matchConditions":[{"name":"owner-dropped","expression":"!has(object.spec.owner) && has(oldObject.spec.owner)"}]}`
// +kubebuilder:webhook:path=/validate-apikeys-dev-v1alpha1-apikey,mutating=false,failurePolicy=fail,sideEffects=None,groups=apikeys.dev,resources=apikeys,verbs=create;update,versions=v1alpha1,name=vapikey-v1alpha1.apikeys.dev,admissionReviewVersions=v1,patch=`{"matchConditions":[{"name":"sets-lifetime-or-secret-metadata","expression":"has(object.spec.ttl) || has(object.spec.expiresAt) || (has(object.spec.secret) && (has(object.spec.secret.labels) || has(object.spec.secret.annotations)))"}]}`

// SetupApiKeyWebhookWithManager serves both webhooks on the manager's webhook
// server.
func SetupApiKeyWebhookWithManager(mgr ctrl.Manager, p *policy.Policy) error {
	return ctrl.NewWebhookManagedBy(mgr, &apikeysv1alpha1.ApiKey{}).
		WithDefaulter(&Defaulter{}).
		WithValidator(&Validator{Policy: p}).
		Complete()
}

// Defaulter puts back, on update, the owner stamped at creation if the
// request dropped it, as server-side apply from a GitOps tool does, since
// Git never holds it. It is a convenience, not a security boundary: the
// CRD's CEL keeps the owner from changing.
type Defaulter struct{}

// Default implements admission.Defaulter.
func (d *Defaulter) Default(ctx context.Context, key *apikeysv1alpha1.ApiKey) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	if req.Operation != admissionv1.Update {
		return nil
	}
	old := &apikeysv1alpha1.ApiKey{}
	if err := json.Unmarshal(req.OldObject.Raw, old); err != nil {
		return fmt.Errorf("decoding the ApiKey as it was: %w", err)
	}
	keepOwner(old, key)
	return nil
}

// keepOwner restores the owner stamped at creation if an update dropped it.
func keepOwner(old, key *apikeysv1alpha1.ApiKey) {
	if key.Spec.Owner == nil && old.Spec.Owner != nil {
		key.Spec.Owner = old.Spec.Owner
	}
}

// Validator enforces the rules of internal/policy on every write, with
// messages that say what to change.
type Validator struct {
	Policy *policy.Policy
	// Now returns the current time; tests may pin it. Default time.Now.
	Now func() time.Time
}

// ValidateCreate implements admission.Validator.
func (v *Validator) ValidateCreate(_ context.Context, key *apikeysv1alpha1.ApiKey) (admission.Warnings, error) {
	return nil, v.checkSpec(key, nil)
}

// ValidateUpdate implements admission.Validator.
func (v *Validator) ValidateUpdate(_ context.Context, old, key *apikeysv1alpha1.ApiKey) (admission.Warnings, error) {
	switch {
	case old.Spec.Identity != key.Spec.Identity:
		return nil, fmt.Errorf("spec.identity cannot change: create a new ApiKey instead")
	case old.Spec.Prefix != key.Spec.Prefix:
		return nil, fmt.Errorf("spec.prefix cannot change: create a new ApiKey instead")
	case !apiequality.Semantic.DeepEqual(old.Spec.Owner, key.Spec.Owner):
		return nil, fmt.Errorf("spec.owner cannot change: it records who created the key")
	}
	// status.issuedAt only makes the message early and friendly: the
	// controller measures expiry from its record and stalls the key if this
	// was wrong.
	expiryChanged := !apiequality.Semantic.DeepEqual(old.Spec.ExpiresAt, key.Spec.ExpiresAt) ||
		!apiequality.Semantic.DeepEqual(old.Spec.TTL, key.Spec.TTL)
	if !expiryChanged {
		// Leave a key that was valid when written alone, even if the
		// operator's --max-ttl shrank since: the controller stalls it.
		return nil, policy.CheckSyntax(&key.Spec)
	}
	return nil, v.checkSpec(key, old.Status.IssuedAt)
}

// ValidateDelete implements admission.Validator; deleting is revoking and always allowed.
func (v *Validator) ValidateDelete(context.Context, *apikeysv1alpha1.ApiKey) (admission.Warnings, error) {
	return nil, nil
}

// checkSpec checks key's spec for a token issued at issuedAt, or, if nil,
// for one issued now.
func (v *Validator) checkSpec(key *apikeysv1alpha1.ApiKey, issuedAt *metav1.Time) error {
	if err := policy.CheckSyntax(&key.Spec); err != nil {
		return err
	}
	return v.Policy.CheckExpiry(&key.Spec, issuedAt, v.now())
}

func (v *Validator) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}
