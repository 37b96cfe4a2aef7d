// Package v1alpha1 holds the admission webhooks for apikeys.dev/v1alpha1
// ApiKeys: the mutating one stamps who created a key, the validating one
// refuses keys that claim an identity their creator may not hand out.
package v1alpha1

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
)

// +kubebuilder:webhook:path=/mutate-apikeys-dev-v1alpha1-apikey,mutating=true,failurePolicy=fail,sideEffects=None,groups=apikeys.dev,resources=apikeys,verbs=create;update,versions=v1alpha1,name=mapikey-v1alpha1.apikeys.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-apikeys-dev-v1alpha1-apikey,mutating=false,failurePolicy=fail,sideEffects=None,groups=apikeys.dev,resources=apikeys,verbs=create;update,versions=v1alpha1,name=vapikey-v1alpha1.apikeys.dev,admissionReviewVersions=v1
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// SetupApiKeyWebhookWithManager serves both webhooks on the manager's webhook
// server. c must be able to create SubjectAccessReviews.
func SetupApiKeyWebhookWithManager(mgr ctrl.Manager, p *policy.Policy) error {
	return ctrl.NewWebhookManagedBy(mgr, &apikeysv1alpha1.ApiKey{}).
		WithDefaulter(&Defaulter{Policy: p}).
		WithValidator(&Validator{Policy: p, Client: mgr.GetClient()}).
		Complete()
}

// Defaulter stamps spec.owner from the creating request and fills the
// defaults. On update it changes nothing, except to put back an owner (and
// its attestation) that the request dropped, as server-side apply from a
// GitOps tool does, since Git never holds them.
type Defaulter struct {
	Policy *policy.Policy
	// Now returns the current time; tests may pin it. Default time.Now.
	Now func() time.Time
}

// Default implements admission.Defaulter.
func (d *Defaulter) Default(ctx context.Context, key *apikeysv1alpha1.ApiKey) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	switch req.Operation {
	case admissionv1.Create:
		d.defaultCreate(req, key)
	case admissionv1.Update:
		old := &apikeysv1alpha1.ApiKey{}
		if err := json.Unmarshal(req.OldObject.Raw, old); err != nil {
			return fmt.Errorf("decoding the ApiKey as it was: %w", err)
		}
		keepOwner(old, key)
	}
	return nil
}

func (d *Defaulter) defaultCreate(req admission.Request, key *apikeysv1alpha1.ApiKey) {
	if key.Spec.Identity == "" {
		key.Spec.Identity = apikeysv1alpha1.IdentityKey
	}
	if key.Spec.Prefix == "" {
		key.Spec.Prefix = apikeysv1alpha1.DefaultPrefix
	}
	if key.Spec.Secret.Name == "" && key.Name != "" {
		key.Spec.Secret.Name = key.Name + "-token"
	}
	// An owner the request names itself is left for the validating webhook,
	// which refuses it unless the requester may impersonate that owner.
	if key.Spec.Owner == nil {
		key.Spec.Owner = &apikeysv1alpha1.Owner{
			Username: req.UserInfo.Username,
			UID:      req.UserInfo.UID,
			Groups:   d.Policy.AllowedGroups(req.UserInfo.Groups),
		}
	}
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	if key.Annotations == nil {
		key.Annotations = map[string]string{}
	}
	key.Annotations[policy.AttestationAnnotation] = d.Policy.Attest(req.Namespace, key.Name, key.Spec.Owner, now())
}

// keepOwner restores what admission stamped at creation if an update
// dropped or changed it.
func keepOwner(old, key *apikeysv1alpha1.ApiKey) {
	if key.Spec.Owner == nil && old.Spec.Owner != nil {
		key.Spec.Owner = old.Spec.Owner
	}
	if att, ok := old.Annotations[policy.AttestationAnnotation]; ok && key.Annotations[policy.AttestationAnnotation] != att {
		if key.Annotations == nil {
			key.Annotations = map[string]string{}
		}
		key.Annotations[policy.AttestationAnnotation] = att
	}
}

// Validator enforces the rules of internal/policy on every write, with
// messages that say what to change.
type Validator struct {
	Policy *policy.Policy
	// Client creates SubjectAccessReviews.
	Client client.Client
	// Now returns the current time; tests may pin it. Default time.Now.
	Now func() time.Time
}

// ValidateCreate implements admission.Validator.
func (v *Validator) ValidateCreate(ctx context.Context, key *apikeysv1alpha1.ApiKey) (admission.Warnings, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, err
	}
	now := v.now()
	if err := v.checkSpec(key, now, false, now); err != nil {
		return nil, err
	}
	if err := v.checkOwnerClaim(ctx, req.UserInfo, key.Spec.Owner); err != nil {
		return nil, err
	}
	if key.Spec.Identity == apikeysv1alpha1.IdentityOwner {
		if err := v.Policy.CheckAttestation(key); err != nil {
			return nil, fmt.Errorf("%w (an identity Owner key needs a fixed metadata.name, not generateName, "+
				"and its %s annotation is written by this webhook, not by you)", err, policy.AttestationAnnotation)
		}
	}
	return nil, nil
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
	case old.Annotations[policy.AttestationAnnotation] != key.Annotations[policy.AttestationAnnotation]:
		return nil, fmt.Errorf("the %s annotation is written by the operator and cannot change", policy.AttestationAnnotation)
	}
	now := v.now()
	issuedAt, issued := now, old.Status.IssuedAt != nil
	if issued {
		issuedAt = old.Status.IssuedAt.Time
	}
	expiryChanged := !apiequality.Semantic.DeepEqual(old.Spec.ExpiresAt, key.Spec.ExpiresAt) ||
		!apiequality.Semantic.DeepEqual(old.Spec.TTL, key.Spec.TTL)
	if !expiryChanged {
		// Leave a key that was valid when written alone, even if the
		// operator's --max-ttl shrank since: the controller stalls it.
		return nil, policy.CheckSyntax(&key.Spec)
	}
	return nil, v.checkSpec(key, issuedAt, issued, now)
}

// ValidateDelete implements admission.Validator; deleting is revoking and always allowed.
func (v *Validator) ValidateDelete(context.Context, *apikeysv1alpha1.ApiKey) (admission.Warnings, error) {
	return nil, nil
}

func (v *Validator) checkSpec(key *apikeysv1alpha1.ApiKey, issuedAt time.Time, issued bool, now time.Time) error {
	if err := policy.CheckSyntax(&key.Spec); err != nil {
		return err
	}
	if err := v.Policy.CheckOwnerGroups(key.Spec.Owner); err != nil {
		return err
	}
	return v.Policy.CheckExpiry(&key.Spec, issuedAt, issued, now)
}

// impersonateVerb is the RBAC verb a requester needs on each part of an
// owner identity it claims but does not hold itself.
const impersonateVerb = "impersonate"

// checkOwnerClaim allows an owner other than the requester only if a
// SubjectAccessReview says the requester may impersonate that user, UID and
// each group the requester does not have: a GitOps controller can create a
// personal key for alice only if it could act as alice anyway.
func (v *Validator) checkOwnerClaim(ctx context.Context, requester authenticationv1.UserInfo, owner *apikeysv1alpha1.Owner) error {
	if owner == nil {
		return nil
	}
	var need []*authorizationv1.ResourceAttributes
	if owner.Username != requester.Username {
		need = append(need, &authorizationv1.ResourceAttributes{Verb: impersonateVerb, Resource: "users", Name: owner.Username})
	}
	if owner.UID != "" && owner.UID != requester.UID {
		need = append(need, &authorizationv1.ResourceAttributes{
			Verb: impersonateVerb, Group: "authentication.k8s.io", Resource: "uids", Name: owner.UID})
	}
	for _, g := range owner.Groups {
		if !slices.Contains(requester.Groups, g) {
			need = append(need, &authorizationv1.ResourceAttributes{Verb: impersonateVerb, Resource: "groups", Name: g})
		}
	}
	var denied []string
	for _, attrs := range need {
		allowed, err := v.allowed(ctx, requester, attrs)
		if err != nil {
			return fmt.Errorf("checking whether %s may impersonate the owner: %w", requester.Username, err)
		}
		if !allowed {
			denied = append(denied, fmt.Sprintf("%s %q", strings.TrimSuffix(attrs.Resource, "s"), attrs.Name))
		}
	}
	if len(denied) > 0 {
		return fmt.Errorf("%s may not create a key owned by %q: that needs permission to impersonate %s; "+
			"leave spec.owner empty to own the key yourself", requester.Username, owner.Username, strings.Join(denied, ", "))
	}
	return nil
}

func (v *Validator) allowed(ctx context.Context, user authenticationv1.UserInfo, attrs *authorizationv1.ResourceAttributes) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, ResourceAttributes: attrs,
		Extra: map[string]authorizationv1.ExtraValue{},
	}}
	for k, val := range user.Extra {
		sar.Spec.Extra[k] = authorizationv1.ExtraValue(val)
	}
	if err := v.Client.Create(ctx, sar); err != nil {
		return false, err
	}
	return sar.Status.Allowed, nil
}

func (v *Validator) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}
