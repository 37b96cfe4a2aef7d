package authserver

import (
	"net/http"
	"slices"
	"time"

	"github.com/apikey-operator/apikey-operator/pkg/apikeyauth"
)

// The JSON of POST /verify is defined once, in the client's module, for both
// the client and this server.
type (
	VerifyRequest  = apikeyauth.VerifyRequest
	VerifyResponse = apikeyauth.VerifyResponse
	KeyRef         = apikeyauth.KeyRef
)

// serveVerify is the JSON API for in-cluster services. A well-formed request
// gets 200 with a code once the index has synced (503 before, so clients
// retry rather than cache a refusal); a malformed request, an empty token or
// one longer than apikeyauth.MaxTokenLength gets a 4xx.
func (s *Server) serveVerify(w http.ResponseWriter, r *http.Request, now time.Time) result {
	var req VerifyRequest
	if !readJSON(w, r, &req) || !tokenReadable(w, req.Token) {
		return resultBadRequest
	}
	if !s.index.Synced() {
		writeError(w, http.StatusServiceUnavailable, "the token index has not synced yet")
		return resultNotSynced
	}
	e, code := s.index.Verify(req.Token, now)
	switch {
	case code != CodeValid:
	case len(req.Namespaces) > 0 && !slices.Contains(req.Namespaces, e.Namespace()):
		code = CodeAudienceMismatch
	default:
		code = e.Authorize(req.Scopes, req.Audience)
	}
	resp := VerifyResponse{Valid: code == CodeValid, Code: code.String()}
	if code == CodeValid {
		e.markUsed(now)
		resp.Username, resp.UID, resp.Groups, resp.Scopes = e.Username, e.UID, e.Groups(), e.Scopes()
		resp.APIKey = &KeyRef{Namespace: e.Namespace(), Name: e.Name}
		if t := e.ExpiresAt(); !t.IsZero() {
			t = t.UTC()
			resp.ExpiresAt = &t
		}
	}
	writeJSON(w, http.StatusOK, &resp)
	return result(code)
}
