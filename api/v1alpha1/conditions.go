package v1alpha1

// The conditions and reasons the operator writes on an ApiKey, defined once
// here for every reader: the controller, the kubectl plugin, tests, and
// tools outside this repository that watch keys.

// Condition types of an ApiKey, following kstatus: Ready is always present;
// Reconciling and Stalled are present only while true; Expired and Suspended
// are present only while true and say why a key stopped working;
// ExpiringSoon is present only while true and warns before expiry.
const (
	ConditionReady        = "Ready"
	ConditionReconciling  = "Reconciling"
	ConditionStalled      = "Stalled"
	ConditionExpired      = "Expired"
	ConditionSuspended    = "Suspended"
	ConditionExpiringSoon = "ExpiringSoon"
)

// Reasons on conditions and events.
const (
	// ReasonIssued: the token was minted, its record written and the Secret delivered.
	ReasonIssued = "Issued"
	// ReasonIssuing: a token is being minted and delivered.
	ReasonIssuing = "Issuing"
	// ReasonRetrying: the last pass hit an error the operator retries with backoff.
	ReasonRetrying = "RetryingAfterError"
	// ReasonExpired: the key's expiry has passed; it no longer authenticates.
	ReasonExpired = "Expired"
	// ReasonSuspended: spec.suspended is true; the key does not authenticate.
	ReasonSuspended = "Suspended"
	// ReasonResumed: spec.suspended went back to false; the key works again.
	ReasonResumed = "Resumed"
	// ReasonRotated: a new token replaced the live one in the same Secret.
	ReasonRotated = "Rotated"
	// ReasonExpiringSoon: the live token expires within 7 days or 10 % of
	// its lifetime, whichever is shorter.
	ReasonExpiringSoon = "ExpiringSoon"
	// ReasonSecretDeleted: the delivered Secret is gone; the key stays valid.
	ReasonSecretDeleted = "SecretDeleted"
	// ReasonSecretDeletionBlocked: spec.secret.deleteAfter asked for the
	// Secret's deletion, and finalizers keep it, token included.
	ReasonSecretDeletionBlocked = "SecretDeletionBlocked"
	// ReasonSecretNameTaken: a Secret of that name exists and is not this key's.
	ReasonSecretNameTaken = "SecretNameTaken"
	// ReasonStatusForged: status names a token, or tells of one, that the
	// operator's records do not hold: someone else wrote it.
	ReasonStatusForged = "StatusForged"
	// ReasonOwnerNotAllowed: identity Owner, but the owner is missing, a
	// service account not in --owner-requesters, or an API key.
	ReasonOwnerNotAllowed = "OwnerNotAllowed"
	// ReasonOwnerPolicyNotInForce: identity Owner, but the admission policy
	// that checks who created the key was missing or altered when it was.
	ReasonOwnerPolicyNotInForce = "OwnerPolicyNotInForce"
	// ReasonForbiddenGroup: the owner carries system:masters or a --forbidden-groups group.
	ReasonForbiddenGroup = "ForbiddenGroup"
	// ReasonInvalidExpiry: expiresAt/ttl is in the past or beyond --max-ttl.
	ReasonInvalidExpiry = "InvalidExpiry"
	// ReasonInvalidSpec: the spec breaks a rule the API server should have enforced.
	ReasonInvalidSpec = "InvalidSpec"
)
