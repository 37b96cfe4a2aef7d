package apikeyauth

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// APIKeyHeader is the request header Middleware reads a token from when the
// request has no Authorization header.
const APIKeyHeader = "X-API-Key"

// RFC 6750 challenges, the same the auth server's forward-auth sends.
const (
	challengeNoToken      = `Bearer realm="apikeys"`
	challengeInvalidToken = `Bearer error="invalid_token"`
	challengeBadRequest   = `Bearer error="invalid_request"`
	challengeScope        = `Bearer error="insufficient_scope"`
)

// Middleware returns HTTP middleware that lets a request through only with
// a valid token carrying every one of scopes. The token is read from
// "Authorization: Bearer <token>" (scheme in any case) or else from the
// X-API-Key header; the identity the auth server answered is put in the
// request context for FromContext, and the request is otherwise passed on
// unchanged. Requests that are refused get:
//
//   - 401 with WWW-Authenticate: Bearer realm="apikeys" when there is no token;
//   - 401 with Bearer error="invalid_token" when the token is not valid;
//   - 403 with Bearer error="insufficient_scope" when it lacks a scope;
//   - 400 with Bearer error="invalid_request" when the request carries more
//     than one token (both headers, or one twice): which one was meant is
//     never guessed;
//   - 503 when the auth server gave no answer.
//
// No response ever repeats the token.
func (c *Client) Middleware(scopes ...string) func(http.Handler) http.Handler {
	required := newScopeSet(scopes)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, found := credentials(r.Header)
			switch found {
			case credentialsMissing:
				refuse(w, http.StatusUnauthorized, challengeNoToken, "an API key is required")
				return
			case credentialsAmbiguous:
				refuse(w, http.StatusBadRequest, challengeBadRequest, "send one API key, in one header")
				return
			}

			id, err := c.verify(r.Context(), token, required)
			var rejected *RejectedError
			switch {
			case err == nil:
				next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
			case errors.As(err, &rejected) && rejected.Code == CodeInsufficientScope:
				refuse(w, http.StatusForbidden, challengeScope, "the API key lacks a required scope")
			case errors.As(err, &rejected):
				refuse(w, http.StatusUnauthorized, challengeInvalidToken, "the API key is not valid")
			default:
				http.Error(w, "the API key could not be checked; try again", http.StatusServiceUnavailable)
			}
		})
	}
}

func refuse(w http.ResponseWriter, status int, challenge, msg string) {
	w.Header().Set("WWW-Authenticate", challenge)
	http.Error(w, msg, status)
}

type credentialsFound uint8

const (
	credentialsOne credentialsFound = iota
	credentialsMissing
	credentialsAmbiguous
)

// credentials finds the token as the auth server's forward-auth does, so a
// request gets the same answer from both: Authorization: Bearer (scheme in
// any case, then spaces or tabs) or the API-key header, never both. Another
// Authorization scheme counts as no token. A Bearer value that is empty or
// holds a space is returned as it is, for Verify to refuse.
func credentials(h http.Header) (string, credentialsFound) {
	authz, keys := h.Values("Authorization"), h.Values(APIKeyHeader)
	switch {
	case len(authz)+len(keys) > 1:
		return "", credentialsAmbiguous
	case len(authz) == 1:
		const scheme = "bearer"
		v := authz[0]
		if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) || (v[len(scheme)] != ' ' && v[len(scheme)] != '\t') {
			return "", credentialsMissing
		}
		return strings.Trim(v[len(scheme):], " \t"), credentialsOne
	case len(keys) == 1:
		return strings.Trim(keys[0], " \t"), credentialsOne
	default:
		return "", credentialsMissing
	}
}

type identityKey struct{}

// NewContext returns a copy of ctx carrying id, as Middleware does. It is
// meant for tests of handlers that sit behind Middleware.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity Middleware put in ctx, and whether there
// is one.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*Identity)
	return id, ok && id != nil
}
