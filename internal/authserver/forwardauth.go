package authserver

import (
	"net/http"
	"strings"
)

// Headers forward-auth answers with. Proxies copy them to the upstream
// request; they must strip any the client sent (see docs/).
const (
	HeaderUser      = "X-Auth-Request-User"
	HeaderGroups    = "X-Auth-Request-Groups"
	HeaderScopes    = "X-Auth-Request-Scopes"
	HeaderName      = "X-Apikey-Name"
	HeaderNamespace = "X-Apikey-Namespace"
)

// forwardHeaderNames pairs with Entry.forwardHeaders.
var forwardHeaderNames = [5]string{HeaderUser, HeaderGroups, HeaderScopes, HeaderName, HeaderNamespace}

// RFC 6750 challenges.
const (
	challengeNoToken      = `Bearer realm="apikeys"`
	challengeInvalidToken = `Bearer error="invalid_token"`
	challengeBadRequest   = `Bearer error="invalid_request"`
	challengeScope        = `Bearer error="insufficient_scope"`
)

// serveForwardAuth answers a proxy's subrequest: 200 with identity headers,
// 401 for a missing or bad token, 403 for a valid token without a required
// scope. Proxies only understand 2xx/401/403 here, so every bad input is a
// 401. Identity headers on the request are never read or echoed.
func (s *Server) serveForwardAuth(w http.ResponseWriter, r *http.Request) result {
	tok, problem := s.credentials(r.Header)
	switch problem {
	case credentialsMissing:
		unauthorized(w, challengeNoToken)
		return resultNoToken
	case credentialsMalformed:
		unauthorized(w, challengeBadRequest)
		return result(CodeMalformed)
	}

	now := s.opts.Now()
	e, code := s.index.Verify(tok, now)
	if code == CodeValid {
		var scopes []string
		var audience string
		if r.URL.RawQuery != "" {
			q := r.URL.Query()
			scopes, audience = q["scope"], q.Get("audience")
			// A proxy that appends the client's path and query to its own
			// (Envoy's path_prefix) must not let the client pick another
			// audience: differing values are refused, never chosen from.
			for _, a := range q["audience"] {
				if a != audience {
					unauthorized(w, challengeBadRequest)
					return result(CodeAudienceMismatch)
				}
			}
		}
		code = e.Authorize(scopes, audience)
	}
	switch code {
	case CodeValid:
		e.markUsed(now)
		h := w.Header()
		for i, name := range forwardHeaderNames {
			h[name] = e.forwardHeaders[i]
		}
		w.WriteHeader(http.StatusOK)
	case CodeInsufficientScope:
		w.Header()["Www-Authenticate"] = []string{challengeScope}
		w.WriteHeader(http.StatusForbidden)
	default:
		unauthorized(w, challengeInvalidToken)
	}
	return result(code)
}

func unauthorized(w http.ResponseWriter, challenge string) {
	w.Header()["Www-Authenticate"] = []string{challenge}
	w.WriteHeader(http.StatusUnauthorized)
}

type credentialsProblem uint8

const (
	credentialsOK credentialsProblem = iota
	credentialsMissing
	credentialsMalformed
)

// credentials finds the token in Authorization: Bearer (scheme in any case,
// any run of spaces or tabs) or in the API-key header. More than one
// candidate (repeated headers, or both headers) is malformed: the server
// never guesses which one the client meant.
func (s *Server) credentials(h http.Header) (string, credentialsProblem) {
	authz := h["Authorization"]
	keys := h[s.opts.APIKeyHeader]
	if len(authz)+len(keys) > 1 {
		return "", credentialsMalformed
	}
	var tok string
	switch {
	case len(authz) == 1:
		v := authz[0]
		const scheme = "bearer"
		if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) || (v[len(scheme)] != ' ' && v[len(scheme)] != '\t') {
			// Another scheme (Basic, …) is not ours: ask for a bearer token.
			return "", credentialsMissing
		}
		tok = strings.Trim(v[len(scheme):], " \t")
	case len(keys) == 1:
		tok = strings.Trim(keys[0], " \t")
	default:
		return "", credentialsMissing
	}
	if tok == "" || strings.ContainsAny(tok, " \t") {
		return "", credentialsMalformed
	}
	return tok, credentialsOK
}
