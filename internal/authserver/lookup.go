package authserver

import (
	"time"

	"github.com/apikey-operator/apikey-operator/internal/token"
)

// Code is the outcome of checking a token.
type Code uint8

// Codes, in the spelling the verify API uses.
const (
	CodeValid Code = iota
	CodeMalformed
	CodeNotFound
	CodeExpired
	CodeSuspended
	CodeInsufficientScope
	CodeAudienceMismatch
	numCodes
)

var codeNames = [numCodes]string{"VALID", "MALFORMED", "NOT_FOUND", "EXPIRED", "SUSPENDED", "INSUFFICIENT_SCOPE", "AUDIENCE_MISMATCH"}

func (c Code) String() string {
	if c < numCodes {
		return codeNames[c]
	}
	return "UNKNOWN"
}

// Verify is the request path: hash, one map lookup, a constant-time compare,
// then the checks that can make a known token invalid. It does not allocate.
//
// The lookup is keyed by the first 8 bytes of the token's SHA-256, so its
// timing can only leak hash bits, which say nothing about any token; the
// constant-time compare of the whole stored hash (sameHash) is the
// contract's final comparison.
//
// A token that hashes to a record is one the operator minted, so its
// checksum is right by construction; the checksum is checked only on a
// miss, to tell a mistyped or foreign token (MALFORMED) from an unknown one.
func (ix *Index) Verify(tok string, now time.Time) (*Entry, Code) {
	if len(tok) == 0 || len(tok) > token.MaxLength {
		return nil, CodeMalformed
	}
	sum := token.Sum(tok)

	ix.mu.RLock()
	e := ix.entries.get(&sum)
	ix.mu.RUnlock()

	if e == nil {
		if _, err := token.Parse(tok); err != nil {
			return nil, CodeMalformed
		}
		return nil, CodeNotFound
	}
	// A token whose ApiKey is gone or being deleted, or whose namespace is
	// being deleted, is revoked, whether or not the controller has removed
	// the record yet.
	if ks := e.key; !ks.present.Load() || ks.deleting.Load() || ix.namespaceDeleting(e.group.namespace) {
		return nil, CodeNotFound
	}
	if e.Suspended || e.key.suspended.Load() {
		return nil, CodeSuspended
	}
	if e.expires != 0 && now.UnixNano() >= e.expires {
		return nil, CodeExpired
	}
	return e, CodeValid
}

// Authorize checks a valid entry against the scopes a caller requires (all
// of them) and the audience it names. A key scope "x:*" grants every scope
// starting with "x:", and "*" grants all. A key with audiences is valid only
// for a request that names one of them.
func (e *Entry) Authorize(scopes []string, audience string) Code {
	if audiences := e.group.audiences; len(audiences) > 0 && !contains(audiences, audience) {
		return CodeAudienceMismatch
	}
	for _, want := range scopes {
		if !e.grants(want) {
			return CodeInsufficientScope
		}
	}
	return CodeValid
}

func (e *Entry) grants(scope string) bool {
	for _, have := range e.group.scopes {
		if have == scope || have == "*" {
			return true
		}
		if n := len(have); n >= 2 && have[n-1] == '*' && have[n-2] == ':' &&
			len(scope) > n-1 && scope[:n-1] == have[:n-1] {
			return true
		}
	}
	return false
}

// markUsed notes a successful authentication of the entry's token for the
// usage flusher. It writes the shared counter only when the second changes.
func (e *Entry) markUsed(now time.Time) {
	if s := now.Unix(); e.record.lastUsed.Load() < s {
		e.record.lastUsed.Store(s)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
