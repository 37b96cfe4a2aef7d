package authserver

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
	"github.com/apikey-operator/apikey-operator/pkg/apikeyauth"
)

const (
	tokenReviewV1Body = `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","metadata":{"creationTimestamp":null},` +
		`"spec":{"token":%q},"status":{"user":{}}}`
	fixtureUsername = "apikey:team-payments:billing-export"
)

// serve answers req with f's server, as the manager's webhook server would,
// and fails the test on a 5xx or on a response carrying any of f's secrets.
func (f *authFixture) serve(t testing.TB, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	f.server.Handler().ServeHTTP(rec, req)
	// Only a server whose index is still loading may answer 503.
	if rec.Code >= 500 && (rec.Code != http.StatusServiceUnavailable || f.server.Index().Synced()) {
		t.Errorf("%s %s: status %d", req.Method, req.URL.Path, rec.Code)
	}
	assertNoSecrets(t, rec.Header(), rec.Body.String(), f.secrets)
	return rec
}

// assertNoSecrets fails t if a header or the body holds any of secrets, or
// the secret part (body and checksum, or body alone) of any of them.
func assertNoSecrets(t testing.TB, h http.Header, body string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		for _, part := range secretParts(s) {
			if strings.Contains(body, part) {
				t.Errorf("response body carries the token %s", token.Hint(s))
			}
			for k, vs := range h {
				for _, v := range vs {
					if strings.Contains(k, part) || strings.Contains(v, part) {
						t.Errorf("response header %s carries the token %s", k, token.Hint(s))
					}
				}
			}
		}
	}
}

// secretParts are the strings that give a token away: the token, what
// follows its last '_', and that without the checksum.
func secretParts(tok string) []string {
	parts := []string{tok}
	if tail := tokenBody(tok); len(tail) >= token.BodyLength && tail != tok {
		parts = append(parts, tail, tail[:token.BodyLength])
	}
	return parts
}

func postJSON(target, body string) *http.Request {
	return httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
}

func tokenReviewBody(apiVersion, tok string, audiences ...string) string {
	review := authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: audiences}}
	review.Kind, review.APIVersion = "TokenReview", apiVersion
	b, err := json.Marshal(&review)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func decodeTokenReview(t testing.TB, rec *httptest.ResponseRecorder) authenticationv1.TokenReview {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var review authenticationv1.TokenReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
		t.Fatalf("answer is not a TokenReview: %v", err)
	}
	return review
}

func TestTokenReviewAuthenticates(t *testing.T) {
	for _, apiVersion := range []string{"authentication.k8s.io/v1", "authentication.k8s.io/v1beta1"} {
		t.Run(apiVersion, func(t *testing.T) {
			f := newAuthFixture(t)
			review := decodeTokenReview(t, f.serve(t, postJSON("/tokenreview", tokenReviewBody(apiVersion, f.token))))
			if review.APIVersion != apiVersion || review.Kind != "TokenReview" {
				t.Errorf("answer is %s %s, want %s TokenReview", review.APIVersion, review.Kind, apiVersion)
			}
			st := review.Status
			if !st.Authenticated || st.Error != "" {
				t.Fatalf("authenticated=%v error=%q, want true and no error", st.Authenticated, st.Error)
			}
			want := authenticationv1.UserInfo{
				Username: fixtureUsername,
				UID:      fixtureKeyUID,
				Groups:   []string{"apikeys", "apikeys:team-payments"},
				Extra: map[string]authenticationv1.ExtraValue{
					"apikeys.dev/name":       {fixtureName},
					"apikeys.dev/namespace":  {fixtureNamespace},
					"apikeys.dev/scopes":     {"orders:read", "invoices:*"},
					"apikeys.dev/token-hint": {token.Hint(f.token)},
				},
			}
			if st.User.Username != want.Username || st.User.UID != want.UID || !slices.Equal(st.User.Groups, want.Groups) ||
				!maps.EqualFunc(st.User.Extra, want.Extra, slices.Equal) {
				t.Errorf("user:\n got %+v\nwant %+v", st.User, want)
			}
			if len(st.Audiences) != 0 {
				t.Errorf("audiences %q for a request without audiences", st.Audiences)
			}
		})
	}
}

// TestTokenReviewKubeAPIServerBody sends the body kube-apiserver sends,
// byte for byte, and checks the answer's raw JSON shape.
func TestTokenReviewKubeAPIServerBody(t *testing.T) {
	f := newAuthFixture(t)
	rec := f.serve(t, postJSON("/tokenreview", strings.Replace(tokenReviewV1Body, "%q", `"`+f.token+`"`, 1)))
	var raw struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Status     struct {
			Authenticated bool                       `json:"authenticated"`
			User          map[string]json.RawMessage `json:"user"`
			Error         *string                    `json:"error"`
		} `json:"status"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if raw.APIVersion != "authentication.k8s.io/v1" || raw.Kind != "TokenReview" || !raw.Status.Authenticated || raw.Status.Error != nil {
		t.Errorf("answer %s", rec.Body)
	}
	for _, field := range []string{"username", "uid", "groups", "extra"} {
		if _, ok := raw.Status.User[field]; !ok {
			t.Errorf("status.user has no %q: %s", field, rec.Body)
		}
	}
}

func TestTokenReviewAudiences(t *testing.T) {
	tests := []struct {
		name         string
		keyAudiences []string
		asked        []string
		want         []string // nil: not authenticated
	}{
		{name: "key without audiences, none asked", asked: nil, want: []string{}},
		// None: kube-apiserver then holds the key to its own audiences, so
		// a service asking about another one is refused (Attack 12).
		{name: "key without audiences answers none, whatever is asked", asked: []string{"https://kubernetes.default.svc", "vault"},
			want: []string{}},
		{name: "key with audiences intersects", keyAudiences: []string{"billing", "api"}, asked: []string{"api", "other"}, want: []string{"api"}},
		{name: "intersection keeps the request's order", keyAudiences: []string{"billing", "api"}, asked: []string{"api", "x", "billing"},
			want: []string{"api", "billing"}},
		{name: "empty intersection", keyAudiences: []string{"billing", "api"}, asked: []string{"other"}},
		{name: "key with audiences, none asked", keyAudiences: []string{"billing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newAuthFixture(t)
			key := informerKey(fixtureNamespace, "audience-key", "audience-uid")
			tok := f.issue(key, "audiences", func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Audiences = tt.keyAudiences })
			st := decodeTokenReview(t, f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", tok, tt.asked...)))).Status
			if st.Error != "" {
				t.Errorf("status.error %q", st.Error)
			}
			if tt.want == nil {
				if st.Authenticated || st.User.Username != "" || len(st.Audiences) != 0 {
					t.Errorf("authenticated=%v user=%q audiences=%q, want refused", st.Authenticated, st.User.Username, st.Audiences)
				}
				return
			}
			if !st.Authenticated || !slices.Equal(st.Audiences, tt.want) && len(st.Audiences)+len(tt.want) > 0 {
				t.Errorf("authenticated=%v audiences=%q, want true %q", st.Authenticated, st.Audiences, tt.want)
			}
		})
	}
}

func TestTokenReviewRefuses(t *testing.T) {
	f := newAuthFixture(t)
	expired := f.issue(informerKey(fixtureNamespace, "expired", "expired-uid"), "expired",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.ExpiresAt = metaTime(fixtureNow.Add(-time.Second)) })
	suspendedKey := informerKey(fixtureNamespace, "suspended", "suspended-uid")
	suspendedKey.Spec.Suspended = true
	suspended := f.issue(suspendedKey, "suspended")
	revokedKey := informerKey(fixtureNamespace, "revoked", "revoked-uid")
	revoked := f.issue(revokedKey, "revoked")
	f.index.DeleteKey(revokedKey.UID)

	for name, tok := range map[string]string{
		"unknown":       f.secret(stableToken("ak", "unknown")),
		"foreign":       f.secret(stableToken("ghp", "foreign")),
		"checksum typo": f.secret(flipLast(f.token)),
		"garbage":       "hunter2",
		"JWT":           "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJpc3MiOiJrdWJlcm5ldGVzIn0.c2lnbmF0dXJl",
		// Not ours, so the answer kube-apiserver caches, not an error.
		"huge":      f.secret(strings.Repeat(f.token, 900)),
		"expired":   expired,
		"suspended": suspended,
		"revoked":   revoked,
	} {
		t.Run(name, func(t *testing.T) {
			st := decodeTokenReview(t, f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1beta1", tok, "api")))).Status
			if st.Authenticated || st.User.Username != "" || len(st.User.Groups) != 0 || len(st.User.Extra) != 0 || len(st.Audiences) != 0 {
				t.Errorf("status %+v, want unauthenticated without identity", st)
			}
			if st.Error != "" {
				t.Errorf("status.error %q: a token that is not ours gets no error text", st.Error)
			}
		})
	}
}

// TestTokenReviewBeforeSync checks that kube-apiserver gets an error it does
// not cache while the index is still loading.
func TestTokenReviewBeforeSync(t *testing.T) {
	f := newAuthFixture(t)
	f.server = f.unsynced()
	f.index = f.server.index

	for _, tok := range []string{f.token, "hunter2"} {
		st := decodeTokenReview(t, f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1beta1", tok)))).Status
		if st.Authenticated || st.User.Username != "" {
			t.Errorf("authenticated %v as %q before sync", st.Authenticated, st.User.Username)
		}
		if st.Error == "" {
			t.Errorf("no status.error before sync")
		}
	}
	f.index.MarkSynced()
	st := decodeTokenReview(t, f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1beta1", f.token)))).Status
	if !st.Authenticated || st.Error != "" {
		t.Errorf("after sync: authenticated=%v error=%q", st.Authenticated, st.Error)
	}
}

func TestTokenReviewBadRequests(t *testing.T) {
	f := newAuthFixture(t)
	valid := tokenReviewBody("authentication.k8s.io/v1", f.token)
	tests := []struct {
		name   string
		method string
		body   string
		want   int
	}{
		{name: "GET", method: http.MethodGet, want: http.StatusMethodNotAllowed},
		{name: "GET with a body", method: http.MethodGet, body: valid, want: http.StatusMethodNotAllowed},
		{name: "PUT", method: http.MethodPut, body: valid, want: http.StatusMethodNotAllowed},
		{name: "empty body", want: http.StatusBadRequest},
		{name: "broken JSON", body: `{"kind":"TokenReview",`, want: http.StatusBadRequest},
		{name: "trailing garbage", body: valid + "x", want: http.StatusBadRequest},
		{name: "JSON array", body: `[]`, want: http.StatusBadRequest},
		{name: "JSON null", body: `null`, want: http.StatusBadRequest},
		{name: "token not a string", body: `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":42}}`,
			want: http.StatusBadRequest},
		{name: "audiences not a list", body: `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"audiences":"api"}}`,
			want: http.StatusBadRequest},
		{name: "wrong kind", body: strings.Replace(valid, `"TokenReview"`, `"SubjectAccessReview"`, 1), want: http.StatusBadRequest},
		{name: "no kind", body: `{"apiVersion":"authentication.k8s.io/v1","spec":{}}`, want: http.StatusBadRequest},
		{name: "wrong group", body: tokenReviewBody("authorization.k8s.io/v1", f.token), want: http.StatusBadRequest},
		{name: "unknown version", body: tokenReviewBody("authentication.k8s.io/v2", f.token), want: http.StatusBadRequest},
		{name: "no group", body: tokenReviewBody("v1", f.token), want: http.StatusBadRequest},
		{name: "no apiVersion", body: tokenReviewBody("", f.token), want: http.StatusBadRequest},
		{name: "non-UTF-8 token", body: `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"ak_` + "\xff\xfe" + `"}}`,
			want: http.StatusBadRequest},
		{name: "non-UTF-8 outside strings", body: "\xef\xbb\xbf\xff" + valid, want: http.StatusBadRequest},
		{name: "empty token", body: tokenReviewBody("authentication.k8s.io/v1", ""), want: http.StatusBadRequest},
		{name: "no spec", body: `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1"}`, want: http.StatusBadRequest},
		{name: "body over 64 KiB", body: valid + strings.Repeat(" ", maxBodyBytes-len(valid)+1), want: http.StatusRequestEntityTooLarge},
		{name: "body of 8 MiB", body: strings.Repeat("{", 8<<20), want: http.StatusRequestEntityTooLarge},
		{name: "body of exactly 64 KiB", body: valid + strings.Repeat(" ", maxBodyBytes-len(valid)), want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			rec := f.serve(t, httptest.NewRequest(method, "/tokenreview", strings.NewReader(tt.body)))
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want == http.StatusMethodNotAllowed && rec.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow %q, want POST", rec.Header().Get("Allow"))
			}
			if tt.want != http.StatusOK {
				assertErrorBody(t, rec)
			}
		})
	}
}

// assertErrorBody checks a 4xx answer is a small JSON error that a client
// can show, and that repeats nothing of the request.
func assertErrorBody(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body) != 1 || body["error"] == "" {
		t.Errorf("error body %q, want {\"error\": \"…\"}", rec.Body)
	}
	if rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("error Content-Type %q", rec.Header().Get("Content-Type"))
	}
}

// authRequest is a forward-auth subrequest carrying headers, given as
// name, value pairs; a name may repeat.
func authRequest(method, target string, headers ...string) *http.Request {
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

// assertForwardAuth checks a forward-auth answer: its status, its challenge
// and, for a 200, the identity headers of the fixture's key.
func assertForwardAuth(t *testing.T, rec *httptest.ResponseRecorder, wantStatus int, wantChallenge string) {
	t.Helper()
	if rec.Code != wantStatus {
		t.Fatalf("status %d, want %d (WWW-Authenticate %q)", rec.Code, wantStatus, rec.Header().Values("WWW-Authenticate"))
	}
	if got := rec.Header().Values("WWW-Authenticate"); wantChallenge == "" && len(got) != 0 ||
		wantChallenge != "" && !slices.Equal(got, []string{wantChallenge}) {
		t.Errorf("WWW-Authenticate %q, want %q", got, wantChallenge)
	}
	identity := map[string]string{
		HeaderUser:      fixtureUsername,
		HeaderGroups:    "apikeys,apikeys:team-payments",
		HeaderScopes:    "orders:read invoices:*",
		HeaderName:      fixtureName,
		HeaderNamespace: fixtureNamespace,
	}
	for h, want := range identity {
		got := rec.Header().Values(h)
		switch {
		case wantStatus == http.StatusOK && !slices.Equal(got, []string{want}):
			t.Errorf("%s: %q, want %q", h, got, want)
		case wantStatus != http.StatusOK && len(got) != 0:
			t.Errorf("%s: %q on a %d", h, got, wantStatus)
		}
	}
}

func TestForwardAuthMethodsAndPaths(t *testing.T) {
	f := newAuthFixture(t)
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "PROPFIND"} {
		for _, target := range []string{"/auth", "/auth/", "/auth/anything", "/auth/a/b/c?x=1&y", "/auth/%2e%2e/tokenreview", "/auth/x/"} {
			t.Run(method+" "+target, func(t *testing.T) {
				assertForwardAuth(t, f.serve(t, authRequest(method, target, "Authorization", "Bearer "+f.token)), http.StatusOK, "")
				assertForwardAuth(t, f.serve(t, authRequest(method, target)), http.StatusUnauthorized, challengeNoToken)
			})
		}
	}
}

// TestForwardAuthUncleanPaths covers /auth/<anything> where anything is not
// a clean path, as Envoy's ext_authz path_prefix produces from a client's
// request path: answered as sent, never redirected (proxies only understand
// 2xx/401/403 from forward-auth).
func TestForwardAuthUncleanPaths(t *testing.T) {
	f := newAuthFixture(t)
	for _, target := range []string{"/auth//x", "/auth/./x", "/auth/a/../b", "/auth/../verify", "/auth//", "/auth/x/.."} {
		t.Run(target, func(t *testing.T) {
			assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, target, "Authorization", "Bearer "+f.token)), http.StatusOK, "")
			assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, target)), http.StatusUnauthorized, challengeNoToken)
		})
	}
}

func TestForwardAuthCredentials(t *testing.T) {
	f := newAuthFixture(t)
	tok := f.token
	tests := []struct {
		name      string
		headers   []string
		status    int
		challenge string
	}{
		{name: "Bearer", headers: []string{"Authorization", "Bearer " + tok}, status: 200},
		{name: "bearer in odd case", headers: []string{"Authorization", "bEaReR " + tok}, status: 200},
		{name: "BEARER", headers: []string{"Authorization", "BEARER " + tok}, status: 200},
		{name: "tab after the scheme", headers: []string{"Authorization", "Bearer\t" + tok}, status: 200},
		{name: "many spaces and tabs", headers: []string{"Authorization", "Bearer  \t  " + tok + " \t "}, status: 200},
		{name: "X-API-Key", headers: []string{"X-API-Key", tok}, status: 200},
		{name: "X-API-Key in lower case", headers: []string{"x-api-key", tok}, status: 200},
		{name: "X-API-Key with spaces", headers: []string{"X-API-Key", " \t" + tok + " "}, status: 200},
		{name: "Bearer and an unrelated header", headers: []string{"Authorization", "Bearer " + tok, "Cookie", "session=1"}, status: 200},

		{name: "no credentials", status: 401, challenge: challengeNoToken},
		{name: "Basic", headers: []string{"Authorization", "Basic YWxpY2U6c2VjcmV0"}, status: 401, challenge: challengeNoToken},
		{name: "another scheme", headers: []string{"Authorization", "Token " + tok}, status: 401, challenge: challengeNoToken},
		{name: "scheme without token", headers: []string{"Authorization", "Bearer"}, status: 401, challenge: challengeNoToken},
		{name: "scheme run into the token", headers: []string{"Authorization", "Bearer" + tok}, status: 401, challenge: challengeNoToken},
		{name: "token without scheme", headers: []string{"Authorization", tok}, status: 401, challenge: challengeNoToken},
		{name: "empty Authorization", headers: []string{"Authorization", ""}, status: 401, challenge: challengeNoToken},

		{name: "both headers", headers: []string{"Authorization", "Bearer " + tok, "X-API-Key", tok},
			status: 401, challenge: challengeBadRequest},
		{name: "Basic and X-API-Key", headers: []string{"Authorization", "Basic YWxpY2U6c2VjcmV0", "X-API-Key", tok},
			status: 401, challenge: challengeBadRequest},
		{name: "duplicate Authorization", headers: []string{"Authorization", "Bearer " + tok, "Authorization", "Bearer " + tok},
			status: 401, challenge: challengeBadRequest},
		{name: "duplicate X-API-Key", headers: []string{"X-API-Key", tok, "x-api-key", tok}, status: 401, challenge: challengeBadRequest},
		{name: "scheme with blank token", headers: []string{"Authorization", "Bearer \t "}, status: 401, challenge: challengeBadRequest},
		{name: "two tokens", headers: []string{"Authorization", "Bearer " + tok + " " + tok}, status: 401, challenge: challengeBadRequest},
		{name: "empty X-API-Key", headers: []string{"X-API-Key", ""}, status: 401, challenge: challengeBadRequest},

		{name: "unknown token", headers: []string{"Authorization", "Bearer " + f.secret(stableToken("ak", "unknown"))},
			status: 401, challenge: challengeInvalidToken},
		{name: "checksum typo", headers: []string{"Authorization", "Bearer " + f.secret(flipLast(tok))},
			status: 401, challenge: challengeInvalidToken},
		{name: "garbage", headers: []string{"Authorization", "Bearer hunter2"}, status: 401, challenge: challengeInvalidToken},
		{name: "non-UTF-8", headers: []string{"X-API-Key", "ak_\xff\xfe\xfd"}, status: 401, challenge: challengeInvalidToken},
		{name: "4 KiB token", headers: []string{"Authorization", "Bearer " + strings.Repeat("a", 4<<10)},
			status: 401, challenge: challengeInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, "/auth", tt.headers...)), tt.status, tt.challenge)
		})
	}
}

func TestForwardAuthRefusedKeys(t *testing.T) {
	f := newAuthFixture(t)
	expired := f.issue(informerKey(fixtureNamespace, "expired", "expired-uid"), "expired",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.ExpiresAt = metaTime(fixtureNow) })
	suspended := f.issue(informerKey(fixtureNamespace, "suspended", "suspended-uid"), "suspended",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Suspended = true })
	revokedKey := informerKey(fixtureNamespace, "revoked", "revoked-uid")
	revoked := f.issue(revokedKey, "revoked")
	f.index.DeleteKey(revokedKey.UID)
	for name, tok := range map[string]string{"expired": expired, "suspended": suspended, "revoked": revoked} {
		t.Run(name, func(t *testing.T) {
			assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+tok)),
				http.StatusUnauthorized, challengeInvalidToken)
		})
	}
}

// TestForwardAuthCommaGroup: a group name with a comma would reach the
// upstream as two groups in X-Auth-Request-Groups, so a record carrying one
// is not indexed at all, and a token indexed before such an edit stops
// working.
func TestForwardAuthCommaGroup(t *testing.T) {
	f := newAuthFixture(t)
	split := func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Groups = []string{"developers,system:masters"} }
	tok := f.issue(informerKey(fixtureNamespace, "comma", "comma-uid"), "comma", split)
	assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+tok)),
		http.StatusUnauthorized, challengeInvalidToken)

	f.index.SetRecord(issuedRecord(f.token, f.key, split))
	assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+f.token)),
		http.StatusUnauthorized, challengeInvalidToken)
	review := decodeTokenReview(t, f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", f.token))))
	if review.Status.Authenticated || len(review.Status.User.Groups) != 0 {
		t.Errorf("TokenReview authenticates the refused record: %+v", review.Status)
	}
}

func TestForwardAuthCustomHeader(t *testing.T) {
	f := newAuthFixture(t)
	f.server = NewServer(f.index, Options{APIKeyHeader: "x-token", Now: func() time.Time { return fixtureNow }})
	assertForwardAuth(t, f.serve(t, authRequest("GET", "/auth", "X-Token", f.token)), http.StatusOK, "")
	assertForwardAuth(t, f.serve(t, authRequest("GET", "/auth", "Authorization", "Bearer "+f.token)), http.StatusOK, "")
	assertForwardAuth(t, f.serve(t, authRequest("GET", "/auth", "X-API-Key", f.token)), http.StatusUnauthorized, challengeNoToken)
	assertForwardAuth(t, f.serve(t, authRequest("GET", "/auth", "X-Token", f.token, "Authorization", "Bearer "+f.token)),
		http.StatusUnauthorized, challengeBadRequest)
}

func TestForwardAuthScopesAndAudience(t *testing.T) {
	f := newAuthFixture(t)
	tests := []struct {
		name      string
		target    string
		status    int
		challenge string
	}{
		{name: "granted scope", target: "/auth?scope=orders:read", status: 200},
		{name: "all scopes granted", target: "/auth/x?scope=orders:read&scope=invoices:read", status: 200},
		{name: "wildcard grant", target: "/auth?scope=invoices:pdf:read", status: 200},
		{name: "escaped scope", target: "/auth?scope=orders%3Aread", status: 200},
		{name: "one of two scopes missing", target: "/auth?scope=orders:read&scope=orders:write", status: 403, challenge: challengeScope},
		{name: "missing scope", target: "/auth/orders?scope=orders:write", status: 403, challenge: challengeScope},
		{name: "empty scope", target: "/auth?scope=", status: 403, challenge: challengeScope},
		{name: "key without audiences, audience asked", target: "/auth?audience=anything", status: 200},
		{name: "unrelated parameters", target: "/auth?rd=https://example.com/&scopes=admin", status: 200},
		{name: "malformed query", target: "/auth?scope=orders:read&%zz", status: 200},
		// The fixture key lives in team-payments.
		{name: "its namespace", target: "/auth?namespace=team-payments&scope=orders:read", status: 200},
		{name: "its namespace among others", target: "/auth?namespace=team-search,team-payments", status: 200},
		{name: "escaped list", target: "/auth?namespace=team-search%2Cteam-payments", status: 200},
		{name: "another namespace, scope held", target: "/auth?namespace=team-orders&scope=orders:read",
			status: 401, challenge: challengeInvalidToken},
		{name: "another namespace, scope missing", target: "/auth?namespace=team-orders&scope=orders:write",
			status: 401, challenge: challengeInvalidToken},
		{name: "a prefix of its namespace", target: "/auth?namespace=team", status: 401, challenge: challengeInvalidToken},
		{name: "empty namespace list", target: "/auth?namespace=", status: 401, challenge: challengeInvalidToken},
		// Envoy's path_prefix appends the client's query to the route's:
		// a second namespace= narrows, it never widens.
		{name: "client appends its own namespace", target: "/auth?namespace=team-orders&namespace=team-payments",
			status: 401, challenge: challengeInvalidToken},
		{name: "client narrows the list", target: "/auth?namespace=team-orders,team-payments&namespace=team-payments", status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, tt.target, "Authorization", "Bearer "+f.token)), tt.status, tt.challenge)
		})
	}

	audKey := informerKey(fixtureNamespace, "audience-key", "audience-uid")
	audTok := f.issue(audKey, "audience", func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Audiences = []string{"billing", "api"} })
	for _, tt := range []struct {
		target    string
		status    int
		challenge string
	}{
		{target: "/auth?audience=billing", status: 200},
		{target: "/auth?audience=api&scope=orders:read", status: 200},
		{target: "/auth?audience=billing&scope=orders:write", status: 403, challenge: challengeScope},
		{target: "/auth?audience=shipping", status: 401, challenge: challengeInvalidToken},
		{target: "/auth?audience=", status: 401, challenge: challengeInvalidToken},
		{target: "/auth", status: 401, challenge: challengeInvalidToken},
	} {
		t.Run("key with audiences "+tt.target, func(t *testing.T) {
			rec := f.serve(t, authRequest(http.MethodGet, tt.target, "X-API-Key", audTok))
			if rec.Code != tt.status || rec.Header().Get("WWW-Authenticate") != tt.challenge {
				t.Fatalf("status %d %q, want %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"), tt.status, tt.challenge)
			}
			if tt.status == 200 && rec.Header().Get(HeaderName) != "audience-key" {
				t.Errorf("%s = %q", HeaderName, rec.Header().Get(HeaderName))
			}
		})
	}
}

// TestForwardAuthIgnoresIdentityHeaders checks that identity headers a client
// smuggles into the request are neither trusted nor echoed.
func TestForwardAuthIgnoresIdentityHeaders(t *testing.T) {
	f := newAuthFixture(t)
	spoofed := []string{
		"X-Auth-Request-User", "admin",
		"X-Auth-Request-Groups", "system:masters",
		"X-Auth-Request-Scopes", "*",
		"X-Apikey-Name", "other",
		"X-Apikey-Namespace", "kube-system",
	}
	assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, "/auth", append(spoofed, "Authorization", "Bearer "+f.token)...)),
		http.StatusOK, "")
	assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, "/auth?scope=admin", append(spoofed, "Authorization", "Bearer "+f.token)...)),
		http.StatusForbidden, challengeScope)
	assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, "/auth", spoofed...)), http.StatusUnauthorized, challengeNoToken)
	assertForwardAuth(t, f.serve(t, authRequest(http.MethodGet, "/auth", append(spoofed, "Authorization", "Bearer hunter2")...)),
		http.StatusUnauthorized, challengeInvalidToken)
}

func TestForwardAuthHeaderLimit(t *testing.T) {
	f := newAuthFixture(t)
	// padded carries headers of exactly size bytes as the limit counts them.
	padded := func(size int) *http.Request {
		req := authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+f.token)
		used := headerBytes(req.Header)
		req.Header.Set("X-Padding", strings.Repeat("p", size-used-len("X-Padding")-4))
		if got := headerBytes(req.Header); got != size {
			t.Fatalf("padded headers to %d bytes, want %d", got, size)
		}
		return req
	}
	assertForwardAuth(t, f.serve(t, padded(maxHeaderBytes)), http.StatusOK, "")
	if rec := f.serve(t, padded(maxHeaderBytes+1)); rec.Code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("headers of 8 KiB + 1 byte: status %d, want 431", rec.Code)
	}

	many := authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+f.token)
	for range 300 {
		many.Header.Add("X-Forwarded-For", "203.0.113.7")
	}
	if rec := f.serve(t, many); rec.Code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("300 repeated headers: status %d, want 431", rec.Code)
	}
	huge := authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+strings.Repeat("a", 64<<10))
	if rec := f.serve(t, huge); rec.Code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB Authorization: status %d, want 431", rec.Code)
	}
	if rec := f.serve(t, huge); rec.Header().Get(HeaderUser) != "" {
		t.Errorf("identity on a 431")
	}
	// The limit holds on every endpoint.
	big := postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", f.token))
	big.Header.Set("X-Padding", strings.Repeat("p", maxHeaderBytes))
	if rec := f.serve(t, big); rec.Code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("tokenreview with 8 KiB headers: status %d, want 431", rec.Code)
	}
}

// verifyAnswer is a /verify answer, kept raw to check which fields appear.
type verifyAnswer struct {
	status int
	fields map[string]json.RawMessage
	resp   VerifyResponse
}

func (f *authFixture) verify(t *testing.T, body string) verifyAnswer {
	t.Helper()
	rec := f.serve(t, postJSON("/verify", body))
	a := verifyAnswer{status: rec.Code}
	if rec.Code != http.StatusOK {
		return a
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &a.fields); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %s", err, rec.Body)
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a.resp); err != nil {
		t.Fatalf("answer is not a VerifyResponse: %v: %s", err, rec.Body)
	}
	return a
}

func verifyBody(tok string, scopes []string, audience string) string {
	b, err := json.Marshal(VerifyRequest{Token: tok, Scopes: scopes, Audience: audience})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// verifyBodyIn asks to verify tok as a service that accepts keys from
// namespaces only.
func verifyBodyIn(tok string, namespaces []string) string {
	b, err := json.Marshal(VerifyRequest{Token: tok, Namespaces: namespaces})
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestVerifyAPI(t *testing.T) {
	f := newAuthFixture(t)
	expiry := time.Date(2031, time.March, 14, 17, 0, 0, 0, time.FixedZone("CET", 3600))
	expiring := f.issue(informerKey("team-search", "indexer", "indexer-uid"), "expiring", func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
		s.ExpiresAt = metaTime(expiry)
		s.Audiences = []string{"search"}
		s.Scopes = []string{"*"}
	})
	expired := f.issue(informerKey(fixtureNamespace, "expired", "expired-uid"), "expired",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.ExpiresAt = metaTime(fixtureNow) })
	suspendedKey := informerKey(fixtureNamespace, "suspended", "suspended-uid")
	suspendedKey.Spec.Suspended = true
	suspended := f.issue(suspendedKey, "suspended")

	identity := []string{"valid", "code", "username", "uid", "groups", "scopes", "apiKey"}
	refusal := []string{"valid", "code"}
	tests := []struct {
		name   string
		body   string
		code   string
		fields []string
	}{
		{name: "VALID", body: verifyBody(f.token, nil, ""), code: "VALID", fields: identity},
		{name: "VALID with scopes", body: verifyBody(f.token, []string{"orders:read", "invoices:pdf"}, "anything"),
			code: "VALID", fields: identity},
		{name: "VALID with expiry", body: verifyBody(expiring, []string{"anything"}, "search"),
			code: "VALID", fields: slices.Concat(identity, []string{"expiresAt"})},
		{name: "MALFORMED garbage", body: verifyBody("hunter2", nil, ""), code: "MALFORMED", fields: refusal},
		{name: "MALFORMED checksum typo", body: verifyBody(f.secret(flipLast(f.token)), nil, ""), code: "MALFORMED", fields: refusal},
		{name: "MALFORMED at the length bound", body: verifyBody(f.secret(strings.Repeat("a", apikeyauth.MaxTokenLength)), nil, ""),
			code: "MALFORMED", fields: refusal},
		{name: "NOT_FOUND", body: verifyBody(f.secret(stableToken("ak", "unknown")), nil, ""), code: "NOT_FOUND", fields: refusal},
		{name: "EXPIRED", body: verifyBody(expired, nil, ""), code: "EXPIRED", fields: refusal},
		{name: "SUSPENDED", body: verifyBody(suspended, nil, ""), code: "SUSPENDED", fields: refusal},
		{name: "INSUFFICIENT_SCOPE", body: verifyBody(f.token, []string{"orders:read", "orders:write"}, ""),
			code: "INSUFFICIENT_SCOPE", fields: refusal},
		{name: "AUDIENCE_MISMATCH", body: verifyBody(expiring, nil, "billing"), code: "AUDIENCE_MISMATCH", fields: refusal},
		{name: "AUDIENCE_MISMATCH without audience", body: verifyBody(expiring, nil, ""), code: "AUDIENCE_MISMATCH", fields: refusal},
		{name: "VALID in a namespace accepted", body: verifyBodyIn(f.token, []string{"team-search", fixtureNamespace}),
			code: "VALID", fields: identity},
		{name: "AUDIENCE_MISMATCH from another namespace", body: verifyBodyIn(f.token, []string{"team-search"}),
			code: "AUDIENCE_MISMATCH", fields: refusal},
		{name: "EXPIRED before the namespace", body: verifyBodyIn(expired, []string{"team-search"}), code: "EXPIRED", fields: refusal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := f.verify(t, tt.body)
			if a.status != http.StatusOK {
				t.Fatalf("status %d, want 200", a.status)
			}
			if a.resp.Code != tt.code || a.resp.Valid != (tt.code == "VALID") {
				t.Errorf("valid=%v code=%q, want code %q", a.resp.Valid, a.resp.Code, tt.code)
			}
			if got := slices.Sorted(maps.Keys(a.fields)); !slices.Equal(got, slices.Sorted(slices.Values(tt.fields))) {
				t.Errorf("fields %q, want %q", got, slices.Sorted(slices.Values(tt.fields)))
			}
		})
	}

	a := f.verify(t, verifyBody(f.token, nil, ""))
	want := VerifyResponse{Valid: true, Code: "VALID", Username: fixtureUsername, UID: fixtureKeyUID,
		Groups: []string{"apikeys", "apikeys:team-payments"}, Scopes: []string{"orders:read", "invoices:*"},
		APIKey: &KeyRef{Namespace: fixtureNamespace, Name: fixtureName}}
	if a.resp.Username != want.Username || a.resp.UID != want.UID || !slices.Equal(a.resp.Groups, want.Groups) ||
		!slices.Equal(a.resp.Scopes, want.Scopes) || a.resp.APIKey == nil || *a.resp.APIKey != *want.APIKey || a.resp.ExpiresAt != nil {
		t.Errorf("answer %+v, want %+v", a.resp, want)
	}
	a = f.verify(t, verifyBody(expiring, nil, "search"))
	if got := string(a.fields["expiresAt"]); got != `"2031-03-14T16:00:00Z"` {
		t.Errorf("expiresAt %s, want the expiry in UTC", got)
	}
	if got := string(a.fields["apiKey"]); got != `{"namespace":"team-search","name":"indexer"}` {
		t.Errorf("apiKey %s", got)
	}
}

func TestVerifyAPIBadRequests(t *testing.T) {
	f := newAuthFixture(t)
	valid := verifyBody(f.token, nil, "")
	tests := []struct {
		name   string
		method string
		body   string
		want   int
	}{
		{name: "GET", method: http.MethodGet, want: http.StatusMethodNotAllowed},
		{name: "DELETE", method: http.MethodDelete, body: valid, want: http.StatusMethodNotAllowed},
		{name: "empty body", want: http.StatusBadRequest},
		{name: "broken JSON", body: `{"token":`, want: http.StatusBadRequest},
		{name: "JSON string", body: `"` + f.token + `"`, want: http.StatusBadRequest},
		{name: "token not a string", body: `{"token":42}`, want: http.StatusBadRequest},
		{name: "scopes not a list", body: `{"token":"x","scopes":"orders:read"}`, want: http.StatusBadRequest},
		{name: "audience not a string", body: `{"token":"x","audience":["a"]}`, want: http.StatusBadRequest},
		{name: "non-UTF-8", body: `{"token":"` + f.token[:10] + "\xff" + `"}`, want: http.StatusBadRequest},
		{name: "no token", body: `{}`, want: http.StatusBadRequest},
		{name: "empty token", body: verifyBody("", []string{"orders:read"}, ""), want: http.StatusBadRequest},
		{name: "token over the bound", body: verifyBody(strings.Repeat("a", apikeyauth.MaxTokenLength+1), nil, ""), want: http.StatusBadRequest},
		{name: "huge token", body: verifyBody(strings.Repeat(f.token, 900), nil, ""), want: http.StatusBadRequest},
		{name: "body over 64 KiB", body: valid + strings.Repeat("\n", maxBodyBytes), want: http.StatusRequestEntityTooLarge},
		{name: "body of exactly 64 KiB", body: valid + strings.Repeat("\t", maxBodyBytes-len(valid)), want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			rec := f.serve(t, httptest.NewRequest(method, "/verify", strings.NewReader(tt.body)))
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want != http.StatusOK {
				assertErrorBody(t, rec)
			}
		})
	}
}

// TestVerifyAPIBeforeSync: /verify refuses to answer from a partial index.
func TestVerifyAPIBeforeSync(t *testing.T) {
	f := newAuthFixture(t)
	f.server = f.unsynced()
	f.index = f.server.index
	rec := f.serve(t, postJSON("/verify", verifyBody(f.token, nil, "")))
	if rec.Code != http.StatusServiceUnavailable || strings.Contains(rec.Body.String(), `"valid"`) {
		t.Errorf("status %d body %s, want 503 without a verdict", rec.Code, rec.Body)
	}
}

// TestForwardAuthBeforeSync: until every feed has listed (the namespaces
// among them, which say whether a key's namespace is being deleted),
// forward-auth lets nobody in, though the key and its record are there; a
// proxy that reaches the pod past its readiness (host network, a node-local
// address) gets 503, which it passes on or turns into an error, never an
// identity.
func TestForwardAuthBeforeSync(t *testing.T) {
	f := newAuthFixture(t)
	f.server = f.unsynced()
	f.index = f.server.index
	rec := f.serve(t, authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+f.token))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", rec.Code)
	}
	for _, name := range forwardHeaderNames {
		if got := rec.Header().Get(name); got != "" {
			t.Errorf("%s: %q before the index synced", name, got)
		}
	}
}

func TestUnknownPaths(t *testing.T) {
	f := newAuthFixture(t)
	for _, target := range []string{"/", "/authx", "/verify/x", "/tokenreview/", "/metrics"} {
		rec := f.serve(t, authRequest(http.MethodGet, target, "Authorization", "Bearer "+f.token))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", target, rec.Code)
		}
	}
}

// TestResponsesNeverCarryToken sends valid, refused, mistyped and foreign
// tokens every way each endpoint takes them, and looks for the token in
// every response, and in every metric the server exports.
func TestResponsesNeverCarryToken(t *testing.T) {
	f := newAuthFixture(t)
	expired := f.issue(informerKey(fixtureNamespace, "expired", "expired-uid"), "expired",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.ExpiresAt = metaTime(fixtureNow) })
	suspended := f.issue(informerKey(fixtureNamespace, "suspended", "suspended-uid"), "suspended",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Suspended = true })
	tokens := []string{
		f.token, expired, suspended,
		f.secret(flipLast(f.token)),
		f.secret(f.token[:len(f.token)-1]),
		f.secret(f.token + "x"),
		f.secret(stableToken("ak", "unknown")),
		f.secret(stableToken("ro_pat", "foreign")),
		f.secret(strings.ToUpper(f.token)),
		f.secret(f.token + "\xff"),
	}
	unsynced := NewIndex()
	unsynced.SetKey(f.key)
	unsynced.SetRecord(issuedRecord(f.token, f.key))
	servers := []*Server{f.server, NewServer(unsynced, Options{})}

	var responses []*httptest.ResponseRecorder
	for _, srv := range servers {
		f.server = srv
		for _, tok := range tokens {
			for _, req := range []*http.Request{
				postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", tok)),
				postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1beta1", tok, "api")),
				postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v2", tok)),
				postJSON("/tokenreview", `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"`+tok+`",}}`),
				postJSON("/tokenreview", `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":["`+tok+`"]}}`),
				postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", tok)+strings.Repeat(" ", maxBodyBytes)),
				httptest.NewRequest(http.MethodGet, "/tokenreview", strings.NewReader(tokenReviewBody("authentication.k8s.io/v1", tok))),
				authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+tok),
				authRequest(http.MethodGet, "/auth/x?scope=orders:write", "Authorization", "Bearer "+tok),
				authRequest(http.MethodPost, "/auth", "X-API-Key", tok),
				authRequest(http.MethodGet, "/auth", "X-API-Key", tok, "Authorization", "Bearer "+tok),
				authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+tok+" "+tok),
				authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+tok, "X-Padding", strings.Repeat("p", maxHeaderBytes)),
				postJSON("/verify", verifyBody(tok, nil, "")),
				postJSON("/verify", verifyBody(tok, []string{"orders:write"}, "x")),
				postJSON("/verify", `{"token":`+tok+`}`),
				postJSON("/verify", `{"token":"`+tok+`","scopes":"`+tok+`"}`),
			} {
				responses = append(responses, f.serve(t, req))
			}
		}
	}
	if len(responses) == 0 {
		t.Fatal("no responses")
	}

	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, s := range f.secrets {
					for _, part := range secretParts(s) {
						if strings.Contains(l.GetValue(), part) {
							t.Errorf("metric %s label %s carries the token %s", mf.GetName(), l.GetName(), token.Hint(s))
						}
					}
				}
			}
		}
	}
}

func TestMetrics(t *testing.T) {
	f := newAuthFixture(t)
	counter := func(endpoint, result string) float64 {
		return scraped(t, "apikey_authentications_total", "endpoint", endpoint, "result", result)
	}
	type series struct{ endpoint, result string }
	want := map[series]float64{
		{"auth", "VALID"}:                     3,
		{"auth", "NO_TOKEN"}:                  1,
		{"auth", "MALFORMED"}:                 2,
		{"auth", "INSUFFICIENT_SCOPE"}:        1,
		{"auth", "BAD_REQUEST"}:               1,
		{"tokenreview", "VALID"}:              1,
		{"tokenreview", "NOT_FOUND"}:          1,
		{"tokenreview", "BAD_REQUEST"}:        2,
		{"tokenreview", "AUDIENCE_MISMATCH"}:  0,
		{"verify", "VALID"}:                   1,
		{"verify", "INSUFFICIENT_SCOPE"}:      1,
		{"verify", "BAD_REQUEST"}:             1,
		{"verify", "EXPIRED"}:                 0,
		{"tokenreview", "INSUFFICIENT_SCOPE"}: 0,
	}
	before := map[series]float64{}
	for s := range want {
		before[s] = counter(s.endpoint, s.result)
	}
	durationsBefore := scraped(t, "apikey_authentication_duration_seconds", "endpoint", "auth")

	for range 3 {
		f.serve(t, authRequest(http.MethodGet, "/auth/x", "Authorization", "Bearer "+f.token))
	}
	f.serve(t, authRequest(http.MethodGet, "/auth"))
	f.serve(t, authRequest(http.MethodGet, "/auth", "Authorization", "Bearer hunter2"))
	f.serve(t, authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+f.token, "X-API-Key", f.token))
	f.serve(t, authRequest(http.MethodGet, "/auth?scope=orders:write", "Authorization", "Bearer "+f.token))
	f.serve(t, authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+f.token, "X-Padding", strings.Repeat("p", maxHeaderBytes)))
	f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", f.token)))
	f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", stableToken("ak", "unknown"))))
	f.serve(t, postJSON("/tokenreview", "{"))
	f.serve(t, httptest.NewRequest(http.MethodGet, "/tokenreview", nil))
	f.serve(t, postJSON("/verify", verifyBody(f.token, nil, "")))
	f.serve(t, postJSON("/verify", verifyBody(f.token, []string{"admin"}, "")))
	f.serve(t, postJSON("/verify", "[]"))

	for s, n := range want {
		if got := counter(s.endpoint, s.result) - before[s]; got != n {
			t.Errorf(`apikey_authentications_total{endpoint=%q,result=%q} rose by %v, want %v`, s.endpoint, s.result, got, n)
		}
	}
	if got := scraped(t, "apikey_authentication_duration_seconds", "endpoint", "auth") - durationsBefore; got != 8 {
		t.Errorf(`apikey_authentication_duration_seconds{endpoint="auth"} observed %v requests, want 8`, got)
	}

	// The gauges report the latest server's index.
	if got := scraped(t, "apikey_index_tokens"); got != 1 {
		t.Errorf("apikey_index_tokens = %v, want 1", got)
	}
	changed := float64(f.index.LastChange().UnixNano()) / 1e9
	if got := scraped(t, "apikey_index_last_change_timestamp_seconds"); got != changed || got <= 0 {
		t.Errorf("apikey_index_last_change_timestamp_seconds = %v, want the index's last change, %v", got, changed)
	}
	NewServer(NewIndex(), Options{})
	if got := scraped(t, "apikey_index_last_change_timestamp_seconds"); got != 0 {
		t.Errorf("apikey_index_last_change_timestamp_seconds before sync = %v, want 0", got)
	}
	if got := scraped(t, "apikey_index_tokens"); got != 0 {
		t.Errorf("apikey_index_tokens of a new server's empty index = %v, want 0", got)
	}
}

// scraped is the value of the series name{labels...} (given as name, value
// pairs) in the manager's registry, as a scrape sees it: a counter's or
// gauge's value, or a histogram's sample count. (prometheus/testutil would
// need github.com/kylelemons/godebug in go.mod.)
func scraped(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels)/2 {
				continue
			}
			for _, l := range m.GetLabel() {
				if i := slices.Index(labels, l.GetName()); i < 0 || i%2 != 0 || labels[i+1] != l.GetValue() {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%q", name, labels)
	return 0
}

func TestUsageMarkedOnSuccessOnly(t *testing.T) {
	f := newAuthFixture(t)
	e, _ := f.index.Verify(f.token, fixtureNow)
	f.serve(t, authRequest(http.MethodGet, "/auth?scope=admin", "Authorization", "Bearer "+f.token))
	f.serve(t, postJSON("/verify", verifyBody(f.token, nil, "any-audience")))
	if got := e.record.lastUsed.Load(); got != fixtureNow.Unix() {
		t.Fatalf("lastUsed %d after a VALID /verify, want %d", got, fixtureNow.Unix())
	}
	e.record.lastUsed.Store(0)
	f.serve(t, authRequest(http.MethodGet, "/auth?scope=admin", "Authorization", "Bearer "+f.token))
	f.serve(t, postJSON("/verify", verifyBody(f.token, []string{"admin"}, "")))
	f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", f.token+"x")))
	if got := e.record.lastUsed.Load(); got != 0 {
		t.Errorf("lastUsed %d after refused requests only", got)
	}
	f.serve(t, postJSON("/tokenreview", tokenReviewBody("authentication.k8s.io/v1", f.token)))
	if got := e.record.lastUsed.Load(); got != fixtureNow.Unix() {
		t.Errorf("lastUsed %d after a VALID TokenReview", got)
	}
}

// TestOverHTTP drives a real HTTP server with keep-alive connections: the
// limits hold on the wire, not only with a recorder.
func TestOverHTTP(t *testing.T) {
	f := newAuthFixture(t)
	srv := httptest.NewServer(f.server.Handler())
	defer srv.Close()
	client := wireClient{f: f, srv: srv}

	for range 3 {
		resp, _ := client.send(t, http.MethodGet, "/auth/app", "", "Authorization", "bEaReR\t"+f.token, "X-Auth-Request-User", "admin")
		if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderUser) != fixtureUsername || len(resp.Header.Values(HeaderUser)) != 1 {
			t.Errorf("forward-auth: %d %q", resp.StatusCode, resp.Header.Values(HeaderUser))
		}
	}
	resp, _ := client.send(t, http.MethodGet, "/auth", "", "Authorization", "Bearer "+f.token, "X-Padding", strings.Repeat("p", 9<<10))
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("9 KiB header: status %d, want 431", resp.StatusCode)
	}
	resp, body := client.send(t, http.MethodPost, "/tokenreview", tokenReviewBody("authentication.k8s.io/v1beta1", f.token),
		"Content-Type", "application/json")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"authenticated":true`) ||
		!strings.Contains(body, `"apiVersion":"authentication.k8s.io/v1beta1"`) {
		t.Errorf("tokenreview: %d %s", resp.StatusCode, body)
	}
	resp, _ = client.send(t, http.MethodPost, "/tokenreview", strings.Repeat(" ", maxBodyBytes+1024))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("body over 64 KiB: status %d, want 413", resp.StatusCode)
	}
	resp, body = client.send(t, http.MethodPost, "/verify", verifyBody(f.token, []string{"orders:read"}, ""))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"code":"VALID"`) {
		t.Errorf("verify: %d %s", resp.StatusCode, body)
	}
}

// wireClient sends requests to srv, a real server of f's, over its keep-alive
// connections, and checks every answer for a 5xx and for f's secrets.
type wireClient struct {
	f   *authFixture
	srv *httptest.Server
}

// send makes a request with headers given as name, value pairs and returns
// the response with its body read.
func (c wireClient) send(t *testing.T, method, path, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 500 {
		t.Errorf("%s %s: status %d", req.Method, req.URL.Path, resp.StatusCode)
	}
	assertNoSecrets(t, resp.Header, string(answer), c.f.secrets)
	return resp, string(answer)
}

// leakRecorder is a testing.TB that notes failures instead of reporting them.
type leakRecorder struct {
	testing.TB
	failed bool
}

func (r *leakRecorder) Helper()               {}
func (r *leakRecorder) Errorf(string, ...any) { r.failed = true }

// TestAssertNoSecrets checks the leak check itself finds a token, or its
// body, in a body or a header.
func TestAssertNoSecrets(t *testing.T) {
	tok := stableToken("ak", "leak")
	body := tokenBody(tok)[:token.BodyLength]
	for name, tt := range map[string]struct {
		header http.Header
		body   string
		leaks  bool
	}{
		"clean":             {header: http.Header{"X-Hint": {token.Hint(tok)}}, body: `{"valid":false}`},
		"token in body":     {body: `{"token":"` + tok + `"}`, leaks: true},
		"body part in body": {body: "Bearer " + body, leaks: true},
		"token in header":   {header: http.Header{"X-Echo": {"x", "Bearer " + tok}}, leaks: true},
		"body part in key":  {header: http.Header{body: {"1"}}, leaks: true},
	} {
		r := &leakRecorder{TB: t}
		assertNoSecrets(r, tt.header, tt.body, []string{tok})
		if r.failed != tt.leaks {
			t.Errorf("%s: leak found %v, want %v", name, r.failed, tt.leaks)
		}
	}
}

// TestGuardRecoversPanics: a panic while answering becomes a 500 that
// repeats nothing of the request or of the panic.
func TestGuardRecoversPanics(t *testing.T) {
	f := newAuthFixture(t)
	panicking := func(http.ResponseWriter, *http.Request, time.Time) result {
		panic("cannot answer for " + f.token)
	}
	rec := httptest.NewRecorder()
	f.server.serve(endpointForwardAuth, panicking, rec, authRequest(http.MethodGet, "/auth", "Authorization", "Bearer "+f.token))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", rec.Code)
	}
	assertNoSecrets(t, rec.Header(), rec.Body.String(), f.secrets)
}

func TestForwardAuthRefusesConflictingAudiences(t *testing.T) {
	f := newAuthFixture(t)
	tok := f.issue(informerKey(fixtureNamespace, "aud", "aud-uid"), "aud",
		func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Audiences = []string{"registry"} })
	for query, want := range map[string]int{
		"?audience=registry":                            http.StatusOK,
		"?audience=registry&path=/x&audience=registry":  http.StatusOK,
		"?audience=shop&path=/x&audience=registry":      http.StatusUnauthorized,
		"?audience=registry&path=/x?a=1&audience=other": http.StatusUnauthorized,
	} {
		req := httptest.NewRequest(http.MethodGet, "/auth"+query, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		f.server.Handler().ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: status %d, want %d", query, rec.Code, want)
		}
	}
}
