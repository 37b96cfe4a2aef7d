package controller

import (
	"encoding/base64"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/apikey-operator/apikey-operator/internal/token"
)

// TestSecretWriteErrorNeverQuotesTheToken checks what a refused Secret write
// turns into: a stall that says why for an invalid Secret, unless the
// refusal quotes any part of the token, raw or as the base64 a Secret's
// data travels in (an admission webhook may echo the object it refused); a
// retry, saying only the reason, for a refusal that may pass next time; and,
// for anything else, only the reason.
func TestSecretWriteErrorNeverQuotesTheToken(t *testing.T) {
	tok, err := token.Generate("ak")
	if err != nil {
		t.Fatal(err)
	}
	secrets := schema.GroupResource{Resource: "secrets"}
	invalid := func(detail string) error {
		return apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, "key-token",
			field.ErrorList{field.Invalid(field.NewPath("metadata", "annotations"), detail, "too long")})
	}
	for _, tt := range []struct {
		name    string
		err     error
		stalls  bool
		refused bool
		says    string
	}{
		{"invalid", invalid("260000 bytes"), true, true, "too long"},
		{"invalid, quoting the token", invalid(tok), true, true, "Invalid"},
		{"invalid, quoting a part of the base64", invalid(base64.StdEncoding.EncodeToString([]byte(tok))[10:30]), true, true, "Invalid"},
		{"forbidden by a webhook quoting the base64 (a quota, a policy: it may pass later)", apierrors.NewForbidden(secrets, "key-token",
			plainError("denied: data.token="+base64.StdEncoding.EncodeToString([]byte(tok)))), false, true, "Forbidden"},
		{"conflict", apierrors.NewConflict(secrets, "key-token", plainError(tok)), false, true, "Conflict"},
		{"too large (a Secret grown to etcd's limit: it will not shrink by itself)",
			apierrors.NewRequestEntityTooLargeError(tok), true, true, "RequestEntityTooLarge"},
		{"etcd's limit, as kube-apiserver answers it (a 500)",
			apierrors.NewInternalError(plainError("etcdserver: request is too large")), true, true, "request is too large"},
		{"timeout", apierrors.NewTimeoutError(tok, 1), false, false, "Timeout"},
		{"internal error (a webhook down: may hide a write)", apierrors.NewInternalError(plainError(tok)), false, false, "InternalError"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := secretWriteError(tt.err, tok, "the rotated token's Secret")
			msg := got.Error()
			if strings.Contains(msg, tok) || strings.Contains(msg, base64.StdEncoding.EncodeToString([]byte(tok))) {
				t.Fatalf("the error quotes the token")
			}
			if _, stalls := asStalled(got); stalls != tt.stalls {
				t.Errorf("stalls: %t, want %t", stalls, tt.stalls)
			}
			if refused(got) != tt.refused {
				t.Errorf("refused: %t, want %t", refused(got), tt.refused)
			}
			if !strings.Contains(msg, tt.says) {
				t.Errorf("the error does not say %q", tt.says)
			}
		})
	}
}

type plainError string

func (r plainError) Error() string { return string(r) }
