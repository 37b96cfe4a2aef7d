package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Identity says whom a key authenticates as.
// +kubebuilder:validation:Enum=Key;Owner
type Identity string

const (
	// IdentityKey makes the key its own user, apikey:<namespace>:<name>, in
	// groups apikeys and apikeys:<namespace>. Safe for GitOps: RBAC must grant
	// it something explicitly and it can never be anyone else.
	IdentityKey Identity = "Key"

	// IdentityOwner makes the key a personal access token that authenticates
	// as spec.owner, the user who created it.
	IdentityOwner Identity = "Owner"
)

// RecordsFinalizer keeps an ApiKey until its records are gone. Admission
// sets it at create, so issuance needs no write of its own for it; the
// controller adds it if admission did not.
const RecordsFinalizer = "apikeys.dev/records"

// DefaultPrefix is the token prefix used when spec.prefix is not set.
const DefaultPrefix = "ak"

// DefaultSecretName is the Secret a key's token is delivered to when
// spec.secret.name is not set. The CRD's CEL rule on spec.secret.name spells
// the same form, <name>-token.
func DefaultSecretName(keyName string) string { return keyName + "-token" }

// RotateAnnotation rotates a key once each time its value changes. The value
// acted on is kept in the new token's record and reported in
// status.lastRotateRequest.
const RotateAnnotation = "apikeys.dev/rotate"

// Owner is the user a personal access token authenticates as.
type Owner struct {
	// username of the owner, as kube-apiserver knows it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Username string `json:"username"`

	// uid of the owner, if the authenticator reported one.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	UID string `json:"uid,omitempty"`

	// groups the owner belonged to when the key was created. A group whose
	// name holds a comma cannot be carried: a proxy would split it in two.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.all(g, !g.contains(','))",message="spec.owner.groups: a group whose name contains ',' cannot be carried (proxies split X-Auth-Request-Groups on commas)"
	Groups []string `json:"groups,omitempty"`
}

// SecretTemplate says where and how the token is delivered.
type SecretTemplate struct {
	// name of the Secret in the ApiKey's namespace that receives the token
	// under the key "token". Defaults to <apikey-name>-token. It cannot change
	// once set: the token is written only once.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`

	// labels added to the Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	Labels map[string]string `json:"labels,omitempty"`

	// annotations added to the Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	Annotations map[string]string `json:"annotations,omitempty"`

	// deleteAfter deletes the Secret this long after the token was delivered,
	// to bound how long the raw token sits in the cluster. The key stays valid
	// and is never re-minted; read the token before then.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('876000h')",message="spec.secret.deleteAfter must be a duration of at most 876000h (100 years)"
	DeleteAfter *metav1.Duration `json:"deleteAfter,omitempty"`
}

// Rotation replaces a key's token: on a schedule with every, on demand with
// the apikeys.dev/rotate annotation. Either way the new token goes into the
// same Secret, and the old one keeps working for gracePeriod.
// +kubebuilder:validation:XValidation:rule="!has(self.every) || !has(self.gracePeriod) || duration(self.gracePeriod) < duration(self.every)",message="spec.rotation.gracePeriod must be shorter than spec.rotation.every: a key has at most two live tokens"
type Rotation struct {
	// every rotates the token this long after its issuance, e.g. 720h. At
	// least 1h.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h')",message="spec.rotation.every must be at least 1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('876000h')",message="spec.rotation.every must be a duration of at most 876000h (100 years)"
	Every *metav1.Duration `json:"every,omitempty"`

	// gracePeriod is how long the previous token keeps working after a
	// rotation. Defaults to 0: the previous token is refused at once.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('876000h')",message="spec.rotation.gracePeriod must be a duration of at most 876000h (100 years)"
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`
}

// ApiKeySpec is what the user asks for.
// +kubebuilder:validation:XValidation:rule="!(has(self.expiresAt) && has(self.ttl))",message="set at most one of expiresAt and ttl"
// +kubebuilder:validation:XValidation:rule="has(self.owner) == has(oldSelf.owner)",message="spec.owner is set when the ApiKey is created and cannot be added or removed later"
type ApiKeySpec struct {
	// description is free text shown to people managing the key.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description,omitempty"`

	// identity is whom the key authenticates as: Key (default) makes the key
	// its own user apikey:<namespace>:<name>; Owner makes it a personal access
	// token for spec.owner. It cannot change.
	// +optional
	// +kubebuilder:default=Key
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="identity cannot change: create a new ApiKey instead"
	Identity Identity `json:"identity,omitempty"`

	// owner is the user who created the key, stamped by admission from the
	// creating request. It cannot change.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="owner cannot change: it records who created the key"
	Owner *Owner `json:"owner,omitempty"`

	// scopes are the permissions the key carries, checked by services that
	// ask the auth server. Editable without reissuing the token.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9][a-z0-9:._/*-]{0,63}$`
	Scopes []string `json:"scopes,omitempty"`

	// audiences, if set, limit the key to these audiences. Without them a key
	// passes any audience a route or /verify asks for, but TokenReview answers
	// it with none, which kube-apiserver reads as its own audiences (as for a
	// legacy ServiceAccount token). Editable without reissuing the token.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule=`self.all(a, !a.matches('\\p{Cc}'))`,message="spec.audiences: an audience may not contain control characters (they would reach TokenReview answers and terminals as they are)"
	Audiences []string `json:"audiences,omitempty"`

	// expiresAt is the instant the key stops working. Set at most one of
	// expiresAt and ttl; both are bounded by the operator's --max-ttl.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="spec.expiresAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// ttl is how long the key works after its token is issued, e.g. 720h.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('876000h')",message="spec.ttl must be a duration of at most 876000h (100 years)"
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// suspended stops the key working at once when true; false brings it back.
	// +optional
	Suspended bool `json:"suspended,omitempty"`

	// prefix starts every token of this key (2-16 of a-z, 0-9 and _, starting
	// with a letter and not ending in _). Defaults to "ak". It cannot change.
	// +optional
	// +kubebuilder:default=ak
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^[a-z][a-z0-9_]*[a-z0-9]$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="prefix cannot change: create a new ApiKey instead"
	Prefix string `json:"prefix,omitempty"`

	// secret says where the token is delivered.
	// +optional
	Secret SecretTemplate `json:"secret,omitempty"`

	// rotation replaces the token on a schedule (every) and says how long
	// the previous token keeps working (gracePeriod), for scheduled and
	// on-demand (apikeys.dev/rotate) rotations alike.
	// +optional
	Rotation *Rotation `json:"rotation,omitempty"`
}

// PreviousKey is a superseded token that still works during a grace period.
type PreviousKey struct {
	// tokenHint identifies the previous token.
	// +required
	// +kubebuilder:validation:MaxLength=32
	TokenHint string `json:"tokenHint"`

	// validUntil is when the previous token stops working.
	// +required
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="status.previousKeys[].validUntil must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	ValidUntil metav1.Time `json:"validUntil"`
}

// ApiKeyStatus is what the operator observed and did.
type ApiKeyStatus struct {
	// conditions: Ready says whether the key works; Reconciling and Stalled
	// appear only while true; Expired and Suspended say why a key stopped.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:XValidation:rule="self.all(c, c.lastTransitionTime >= timestamp('0001-01-01T00:00:00Z'))",message="status.conditions[].lastTransitionTime must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the spec generation the last successful pass acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// tokenHint is the prefix and first body characters of the live token,
	// enough to tell keys apart.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	TokenHint string `json:"tokenHint,omitempty"`

	// issuedAt is when the live token was minted.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="status.issuedAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`

	// expiresAt is when the live token stops working; empty if it does not expire.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="status.expiresAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// lastUsedAt is when the key last authenticated, flushed periodically.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="status.lastUsedAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`

	// secretName is the Secret the token was delivered to.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName,omitempty"`

	// secretDeletedAt is set once the delivered Secret is gone, deleted by
	// secret.deleteAfter or by someone else. The key stays valid.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= timestamp('0001-01-01T00:00:00Z')",message="status.secretDeletedAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z (upper-case T and Z): one the operator could not read would stop every list of these objects"
	SecretDeletedAt *metav1.Time `json:"secretDeletedAt,omitempty"`

	// username is the identity the key authenticates as.
	// +optional
	// +kubebuilder:validation:MaxLength=324
	Username string `json:"username,omitempty"`

	// recordName is the cluster-scoped ApiKeyRecord holding the live token's
	// hash. Like all of status it is a report: the operator decides from its
	// records, and a recordName it did not write marks the key Stalled.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RecordName string `json:"recordName,omitempty"`

	// tokenFingerprint identifies the live token without revealing the hash
	// kept in its record: the first 16 hex digits of SHA-256 over
	// "apikeys.dev/fingerprint:" and the token. kubectl apikey get-token
	// prints a Secret's token only if it matches.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	TokenFingerprint string `json:"tokenFingerprint,omitempty"`

	// previousKeys are superseded tokens still valid during a rotation grace period.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	PreviousKeys []PreviousKey `json:"previousKeys,omitempty"`

	// lastRotateRequest is the apikeys.dev/rotate annotation value last acted
	// on, as the live token's record holds it.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	LastRotateRequest string `json:"lastRotateRequest,omitempty"`
}

// ApiKey is a personal access token or service API key. The operator mints a
// token, keeps only its hash, and writes the raw token once into a Secret.
// The rule on spec.secret.name sits here, on the whole object, so that
// neither removing the field nor setting it later can move the delivery to
// another Secret: once set it stays, and a key created without it may only
// name the default, <metadata.name>-token.
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="(has(oldSelf.spec.secret) && has(oldSelf.spec.secret.name)) ? (has(self.spec.secret) && has(self.spec.secret.name) && self.spec.secret.name == oldSelf.spec.secret.name) : (!has(self.spec.secret) || !has(self.spec.secret.name) || self.spec.secret.name == self.metadata.name + '-token')",message="spec.secret.name cannot change (nor be removed, nor set later to anything but <name>-token): the token was delivered to the original Secret"
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ak
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Identity",type=string,JSONPath=`.spec.identity`
// +kubebuilder:printcolumn:name="Expires",type=string,format=date-time,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Last-Used",type=date,JSONPath=`.status.lastUsedAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Hint",type=string,JSONPath=`.status.tokenHint`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
type ApiKey struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the user asks for; every field is optional.
	// +optional
	// +kubebuilder:default={}
	Spec ApiKeySpec `json:"spec"`

	// status is what the operator observed and did.
	// +optional
	Status ApiKeyStatus `json:"status,omitempty"`
}

// ApiKeyList is a list of ApiKeys.
// +kubebuilder:object:root=true
type ApiKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ApiKey `json:"items"`
}
