package controller

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// stalledError is a problem only a change to the ApiKey (or the operator's
// flags) can fix. It marks the key Stalled and is not retried, so a bad spec
// does not turn into a retry storm.
type stalledError struct {
	reason  string
	message string
}

func (e *stalledError) Error() string { return e.message }

// stalled returns a stalledError with a reason constant and a message that
// tells the user what to change. Never pass a token into args.
func stalled(reason, format string, args ...any) error {
	return &stalledError{reason: reason, message: fmt.Sprintf(format, args...)}
}

// asStalled reports whether err (or an error it wraps) is a stalledError.
func asStalled(err error) (*stalledError, bool) {
	var s *stalledError
	ok := errors.As(err, &s)
	return s, ok
}

// refusedError is a write of a token's Secret that kube-apiserver refused,
// so it did not happen. It says only the refusal's reason: the message may
// quote what was sent.
type refusedError struct {
	what   string
	reason metav1.StatusReason
}

func (e *refusedError) Error() string { return e.what + ": " + string(e.reason) }

// secretWriteError is what a failed write of tok into a Secret returns: a
// stall for a Secret kube-apiserver found invalid or too large (its
// metadata grown to etcd's limit), which only a change of the spec (or of
// the Secret) lifts, with its message unless that quotes
// any part of the token; a refusedError, retried with backoff, for a
// refusal that may pass next time (a quota, a policy being changed, a
// conflict), which says only the reason (an admission webhook's message may
// echo the object); else an error that says only the reason, for a failure
// that may hide a write that happened (a timeout).
func secretWriteError(err error, tok, what string) error {
	reason := apierrors.ReasonForError(err)
	switch {
	case apierrors.IsInvalid(err) || tooLarge(err):
		detail := err.Error()
		if quotesToken(detail, tok) {
			detail = string(reason)
		}
		return stalled(apikeysv1alpha1.ReasonInvalidSpec, "spec.secret: %s was refused: %s", what, detail)
	case apierrors.IsForbidden(err) || apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) ||
		apierrors.IsBadRequest(err) || apierrors.IsNotFound(err):
		return &refusedError{what: "writing " + what, reason: reason}
	}
	return fmt.Errorf("writing %s: %s", what, reason)
}

// quoteRun is the longest run of a token's characters a message may share
// with it: 8 base62 characters are 47 bits, and the checksum would confirm
// guesses at the rest of a token partly quoted.
const quoteRun = 8

// quotesToken reports whether msg holds a run of quoteRun characters of
// tok, as it is or in any base64 (a Secret's data travels in it).
func quotesToken(msg, tok string) bool {
	for _, enc := range []string{tok, base64.StdEncoding.EncodeToString([]byte(tok)),
		base64.URLEncoding.EncodeToString([]byte(tok))} {
		for i := 0; i+quoteRun <= len(enc); i++ {
			if strings.Contains(msg, enc[i:i+quoteRun]) {
				return true
			}
		}
	}
	return false
}

// tooLarge reports whether kube-apiserver refused a write because the object
// would be too large: a 413 for a request body past its limit, or, for an
// object grown past etcd's (say a Secret someone filled with finalizers),
// a 500 that quotes etcd's "request is too large" (kubernetes#112152).
// Either way nothing was stored, and the object will not shrink by itself.
func tooLarge(err error) bool {
	return apierrors.IsRequestEntityTooLargeError(err) ||
		(apierrors.IsInternalError(err) && strings.Contains(err.Error(), "request is too large"))
}

// refused reports whether err says the write did not happen.
func refused(err error) bool {
	var r *refusedError
	_, isStalled := asStalled(err)
	return isStalled || errors.As(err, &r)
}
