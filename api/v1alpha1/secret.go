package v1alpha1

import corev1 "k8s.io/api/core/v1"

// The token Secret's format, as the operator writes it and the plugin and
// other readers find it.
const (
	// SecretType marks a Secret that holds an API key token.
	SecretType corev1.SecretType = "apikeys.dev/token"
	// SecretTokenKey is the data key of the token in its Secret.
	SecretTokenKey = "token"
	// TokenHashAnnotation on the Secret names the hash of the token it was
	// written with. It lets a restarted controller recognise a delivery it
	// made without ever reading the token back.
	TokenHashAnnotation = "apikeys.dev/token-hash"
	// ManagedByLabel marks Secrets the operator wrote.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value.
	ManagedByValue = "apikey-operator"
	// TokenHintAnnotation on the Secret is the hint of the token it holds:
	// it changes with every rotation, so reloaders can roll workloads on it.
	TokenHintAnnotation = "apikeys.dev/token-hint"
	// IssuedAtAnnotation on the Secret is when the token it holds was issued.
	IssuedAtAnnotation = "apikeys.dev/issued-at"
)
