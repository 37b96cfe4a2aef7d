package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ApiKeyUIDLabel on an ApiKeyRecord holds the UID of the ApiKey it belongs to.
const ApiKeyUIDLabel = "apikeys.dev/apikey-uid"

// ApiKeyReference names the ApiKey a record was issued for.
type ApiKeyReference struct {
	// namespace of the ApiKey.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`

	// name of the ApiKey.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// uid of the ApiKey, so a record never outlives the object it was issued for.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	UID string `json:"uid"`
}

// ApiKeyRecordSpec is everything the auth server needs to answer for one
// token, and nothing from which the token could be recovered.
type ApiKeyRecordSpec struct {
	// tokenHash is sha256:<hex> of the whole token. It cannot change.
	// +required
	// +kubebuilder:validation:Pattern=`^sha256:[0-9a-f]{64}$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="tokenHash cannot change"
	TokenHash string `json:"tokenHash"`

	// tokenHint is the token's prefix and first body characters.
	// +required
	// +kubebuilder:validation:MaxLength=32
	TokenHint string `json:"tokenHint"`

	// apiKey is the ApiKey this token was issued for. It cannot change.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="apiKey cannot change"
	ApiKey ApiKeyReference `json:"apiKey"`

	// issuedAt is when the token was minted.
	// +required
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="spec.issuedAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	IssuedAt metav1.Time `json:"issuedAt"`

	// username the token authenticates as: at most 324 characters,
	// apikey:<namespace>:<name> with the longest namespace (63) and name
	// (253).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=324
	Username string `json:"username"`

	// uid the token authenticates as, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	UID string `json:"uid,omitempty"`

	// groups the token authenticates with.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=66
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^[^,]*$`
	Groups []string `json:"groups,omitempty"`

	// scopes the token carries.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	Scopes []string `json:"scopes,omitempty"`

	// audiences the token is limited to; empty means any.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	Audiences []string `json:"audiences,omitempty"`

	// expiresAt is when the token stops working; empty if it does not expire.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="spec.expiresAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// suspended tokens are refused.
	// +optional
	Suspended bool `json:"suspended,omitempty"`

	// validUntil ends a superseded token's rotation grace period.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="spec.validUntil must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	ValidUntil *metav1.Time `json:"validUntil,omitempty"`

	// issuance counts the key's tokens: 1 for the first, one more with each
	// rotation. Of the records without validUntil, the highest is the live
	// token. It cannot change.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="issuance cannot change"
	Issuance int64 `json:"issuance,omitempty"`

	// rotateRequest is the ApiKey's apikeys.dev/rotate annotation when this
	// token was issued: a new value asks for the next rotation.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	RotateRequest string `json:"rotateRequest,omitempty"`

	// secretName is the Secret in the ApiKey's namespace the token was
	// delivered to. It cannot change.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="secretName cannot change"
	SecretName string `json:"secretName,omitempty"`

	// secretUID is the UID of the Secret the operator delivered the token
	// to. A Secret of that name with another UID was put there by someone
	// else, whatever owner references it carries: no token goes into it.
	// Empty for tokens issued before the operator kept it.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	SecretUID string `json:"secretUID,omitempty"`

	// tokenFingerprint identifies the token without revealing its hash
	// (see ApiKeyStatus.tokenFingerprint). It cannot change.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="tokenFingerprint cannot change"
	TokenFingerprint string `json:"tokenFingerprint,omitempty"`
}

// ApiKeyRecordStatus is written by the auth server: what it saw of the
// token in use. Issuance never reads it.
type ApiKeyRecordStatus struct {
	// lastUsedAt is when the token last authenticated, flushed periodically
	// by the auth server and shown on the ApiKey.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="status.lastUsedAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`
}

// ApiKeyRecord is the hashed record of one issued token. Only the operator
// writes it; tenants get no access to it.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:subresource:status
// +kubebuilder:selectablefield:JSONPath=`.spec.apiKey.uid`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.apiKey.namespace`
// +kubebuilder:printcolumn:name="ApiKey",type=string,JSONPath=`.spec.apiKey.name`
// +kubebuilder:printcolumn:name="Hint",type=string,JSONPath=`.spec.tokenHint`
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.username`
// +kubebuilder:printcolumn:name="Expires",type=string,format=date-time,JSONPath=`.spec.expiresAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ApiKeyRecord struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the record.
	// +required
	Spec ApiKeyRecordSpec `json:"spec"`

	// status is what the auth server observed of the token in use.
	// +optional
	Status ApiKeyRecordStatus `json:"status,omitempty"`
}

// ApiKeyRecordList is a list of ApiKeyRecords.
// +kubebuilder:object:root=true
type ApiKeyRecordList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ApiKeyRecord `json:"items"`
}
