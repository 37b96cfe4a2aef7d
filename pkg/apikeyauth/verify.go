package apikeyauth

import "time"

// The /verify wire format: the JSON of the auth server's POST /verify. The
// operator's auth server decodes VerifyRequest and answers VerifyResponse
// with these very types, and Client sends and reads them, so the two cannot
// drift apart.

// MaxTokenLength bounds the token of a /verify request: far above the
// longest token the operator mints (66 bytes), and below the auth server's
// 8 KiB bound on a request's headers, so it holds any token a forward-auth
// request could carry. The auth server answers 400 to a token that is
// empty or longer, as it does to any request it cannot read; Client never
// sends one (see WellFormed).
const MaxTokenLength = 4096

// VerifyRequest is the body of POST /verify. Token is required and at most
// MaxTokenLength bytes.
type VerifyRequest struct {
	Token    string   `json:"token"`
	Scopes   []string `json:"scopes,omitempty"`
	Audience string   `json:"audience,omitempty"`
	// Namespaces, if set, are the only namespaces whose keys the caller
	// accepts: a key from any other is AUDIENCE_MISMATCH. Scopes are what
	// whoever may create ApiKeys in a key's namespace claims for it, so a
	// service that trusts scopes names the namespaces it trusts.
	Namespaces []string `json:"namespaces,omitempty"`
}

// VerifyResponse is the answer of POST /verify. Only a valid token gets an
// identity.
type VerifyResponse struct {
	Valid     bool       `json:"valid"`
	Code      string     `json:"code"`
	Username  string     `json:"username,omitempty"`
	UID       string     `json:"uid,omitempty"`
	Groups    []string   `json:"groups,omitempty"`
	Scopes    []string   `json:"scopes,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	APIKey    *KeyRef    `json:"apiKey,omitempty"`
}

// KeyRef names an ApiKey.
type KeyRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}
