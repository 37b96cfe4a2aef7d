package apikeyauth

import "errors"

// Codes the auth server gives for a token, in the spelling of its verify API.
const (
	CodeValid             = "VALID"
	CodeMalformed         = "MALFORMED"
	CodeNotFound          = "NOT_FOUND"
	CodeExpired           = "EXPIRED"
	CodeSuspended         = "SUSPENDED"
	CodeInsufficientScope = "INSUFFICIENT_SCOPE"
	CodeAudienceMismatch  = "AUDIENCE_MISMATCH"
)

// RejectedError means the auth server answered and the token is not valid
// for the request: Code says why. It never contains the token.
type RejectedError struct {
	// Code is one of the Code constants other than CodeValid, or a code
	// added by a newer auth server.
	Code string
}

func (e *RejectedError) Error() string {
	return "apikeyauth: token rejected: " + e.Code
}

// Is reports whether target is a *RejectedError with the same Code, so that
// errors.Is(err, ErrSuspended) works on any rejection.
func (e *RejectedError) Is(target error) bool {
	t, ok := target.(*RejectedError)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is, one per rejection code.
var (
	ErrMalformed         = &RejectedError{Code: CodeMalformed}
	ErrNotFound          = &RejectedError{Code: CodeNotFound}
	ErrExpired           = &RejectedError{Code: CodeExpired}
	ErrSuspended         = &RejectedError{Code: CodeSuspended}
	ErrInsufficientScope = &RejectedError{Code: CodeInsufficientScope}
	ErrAudienceMismatch  = &RejectedError{Code: CodeAudienceMismatch}
)

// ErrUnavailable is wrapped by every error that means the auth server gave
// no answer: it could not be reached, its certificate was not trusted, it
// timed out, answered with a status other than 200 (503 before its index
// has synced) or with something that is not the verify JSON. Such errors
// are never cached; the next Verify asks again.
var ErrUnavailable = errors.New("apikeyauth: auth server unavailable")

// unavailable wraps cause so that errors.Is matches both ErrUnavailable and
// cause. Callers pass causes that cannot hold the token: the token travels
// only in the request body, which no transport error quotes.
func unavailable(cause error) error {
	return &unavailableError{cause: cause}
}

type unavailableError struct{ cause error }

func (e *unavailableError) Error() string   { return ErrUnavailable.Error() + ": " + e.cause.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.cause} }
