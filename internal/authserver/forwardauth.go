package authserver

import (
	"net/http"
	"net/url"
	"strings"
	"time"
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

// The challenges as WWW-Authenticate values shared by every answer. Each
// slice has cap 1, so a later Header.Add copies rather than writing into
// the shared array.
var (
	wwwAuthNoToken      = []string{challengeNoToken}
	wwwAuthInvalidToken = []string{challengeInvalidToken}
	wwwAuthBadRequest   = []string{challengeBadRequest}
	wwwAuthScope        = []string{challengeScope}
	retryInASecond      = []string{"1"} // Retry-After before the index has synced
)

// serveForwardAuth answers a proxy's subrequest: 200 with identity headers,
// 401 for a missing or bad token, 403 for a valid token without a required
// scope. Proxies only understand 2xx/401/403 here, so every bad input is a
// 401. Before the index has synced it answers 503, as /verify does: only a
// proxy that reaches the pod past its readiness (host network, a node-local
// address) sees it, and a key's namespace may be being deleted unbeknown.
// Identity headers on the request are never read or echoed. A valid
// token's answer allocates nothing but the response's header map.
func (s *Server) serveForwardAuth(w http.ResponseWriter, r *http.Request, now time.Time) result {
	tok, problem := s.credentials(r.Header)
	switch problem {
	case credentialsMissing:
		challenge(w, http.StatusUnauthorized, wwwAuthNoToken)
		return resultNoToken
	case credentialsMalformed:
		challenge(w, http.StatusUnauthorized, wwwAuthBadRequest)
		return result(CodeMalformed)
	}

	if !s.index.Synced() {
		w.Header()["Retry-After"] = retryInASecond
		w.WriteHeader(http.StatusServiceUnavailable)
		return resultNotSynced
	}

	e, code := s.index.Verify(tok, now)
	if code == CodeValid {
		var conflicting bool
		if code, conflicting = authorizeQuery(e, r.URL.RawQuery); conflicting {
			challenge(w, http.StatusUnauthorized, wwwAuthBadRequest)
			return result(code)
		}
	}
	switch code {
	case CodeValid:
		e.markUsed(now)
		h, values := w.Header(), e.forwardHeaders()
		for i, name := range forwardHeaderNames {
			h[name] = values[i]
		}
		w.WriteHeader(http.StatusOK)
	case CodeInsufficientScope:
		challenge(w, http.StatusForbidden, wwwAuthScope)
	default:
		challenge(w, http.StatusUnauthorized, wwwAuthInvalidToken)
	}
	return result(code)
}

func challenge(w http.ResponseWriter, status int, value []string) {
	w.Header()["Www-Authenticate"] = value
	w.WriteHeader(status)
}

// authorizeQuery checks a valid entry against what the query requires:
// every scope= (repeatable), the audience=, and every namespace= (a
// comma-separated list the key's namespace must be in). A proxy that
// appends the client's path and query to its own (Envoy's path_prefix)
// must not let the client widen what its route requires: scopes and
// namespace lists add up (a second namespace= can only narrow), and
// differing audience= values are refused (conflicting), never chosen
// from.
//
// It reads the query as url.ParseQuery does (pairs split at '&'; a pair
// holding ';' or a bad escape skipped) but builds no map: a key or value is
// copied only to unescape it.
func authorizeQuery(e *Entry, query string) (code Code, conflicting bool) {
	var audience string
	haveAudience, scopesHeld, namespaceHeld := false, true, true
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		key, value, ok := authParameter(pair)
		if !ok {
			continue
		}
		switch {
		case key == "scope":
			scopesHeld = scopesHeld && e.grants(value)
		case key == "namespace":
			namespaceHeld = namespaceHeld && inList(value, e.Namespace())
		case !haveAudience:
			audience, haveAudience = value, true
		case value != audience:
			return CodeAudienceMismatch, true
		}
	}
	if !namespaceHeld {
		return CodeAudienceMismatch, false
	}
	if code := e.Authorize(nil, audience); code != CodeValid {
		return code, false
	}
	if !scopesHeld {
		return CodeInsufficientScope, false
	}
	return CodeValid, false
}

// authParameter unescapes one pair of a query if it is one of the
// parameters forward-auth reads (scope, audience, namespace), skipping it
// (ok false) otherwise, or where url.ParseQuery would: a pair holding ';'
// or a bad escape.
func authParameter(pair string) (key, value string, ok bool) {
	if strings.Contains(pair, ";") {
		return "", "", false
	}
	key, value, _ = strings.Cut(pair, "=")
	key, err := url.QueryUnescape(key)
	if err != nil || key != "scope" && key != "audience" && key != "namespace" {
		return "", "", false
	}
	if value, err = url.QueryUnescape(value); err != nil {
		return "", "", false
	}
	return key, value, true
}

// inList reports whether the comma-separated list holds name.
func inList(list, name string) bool {
	for list != "" {
		var item string
		item, list, _ = strings.Cut(list, ",")
		if item == name {
			return true
		}
	}
	return false
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
		tok = trimBlanks(v[len(scheme):])
	case len(keys) == 1:
		tok = trimBlanks(keys[0])
	default:
		return "", credentialsMissing
	}
	// IndexByte is vectorised; ContainsAny would walk the token a byte at a
	// time.
	if tok == "" || strings.IndexByte(tok, ' ') >= 0 || strings.IndexByte(tok, '\t') >= 0 {
		return "", credentialsMalformed
	}
	return tok, credentialsOK
}

// trimBlanks strips spaces and tabs from both ends of v. strings.Trim with
// a two-byte cutset builds its byte set on every call.
func trimBlanks(v string) string {
	for v != "" && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for v != "" && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}
