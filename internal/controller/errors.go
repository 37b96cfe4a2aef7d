package controller

import (
	"errors"
	"fmt"
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
