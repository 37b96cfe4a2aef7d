package authserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/apikey-operator/apikey-operator/internal/token"
)

// FuzzCredentials sends arbitrary Authorization and X-API-Key headers, each
// present zero, one or two times, with an arbitrary query, through
// credentials and through the forward-auth handler. Neither may panic; the
// handler answers only 200, 401 or 403 (431 for oversized headers), and 200
// only for the fixture's token.
func FuzzCredentials(f *testing.F) {
	fx := newAuthFixture(f)
	tok := fx.token
	handler := fx.server.Handler()

	// present picks the headers that are sent, as fuzzedHeaders reads it.
	for _, seed := range []struct {
		authz1, authz2, key1, key2 string
		present                    uint8
		query                      string
	}{
		{authz1: "Bearer " + tok, present: 0b0001},
		{authz1: "bEaReR \t " + tok + "\t", present: 0b0001, query: "scope=orders:read&scope=invoices:read"},
		{authz1: "Bearer " + tok, present: 0b0001, query: "scope=orders:read&scope=orders:write"},
		{key1: tok, present: 0b0100, query: "audience=billing"},
		{key1: " " + tok + " ", present: 0b0100},
		{authz1: "Bearer " + tok, key1: tok, present: 0b0101},
		{authz1: "Bearer " + tok, authz2: "Bearer " + tok, present: 0b0011},
		{key1: tok, key2: tok, present: 0b1100},
		{authz1: "Basic YWxpY2U6c2VjcmV0", present: 0b0001},
		{authz1: "Bearer", present: 0b0001},
		{authz1: "Bearer ", present: 0b0001},
		{authz1: "Bearer " + tok + " " + tok, present: 0b0001},
		{authz1: "Bearer " + flipLast(tok), present: 0b0001},
		{authz1: "Bearer \xff\xfe", present: 0b0001},
		{authz1: "bearer\u00a0" + tok, present: 0b0001},
		{key1: strings.Repeat("a", 9000), present: 0b0100},
		{present: 0, query: "scope=%zz"},
	} {
		f.Add(seed.authz1, seed.authz2, seed.key1, seed.key2, seed.present, seed.query)
	}

	f.Fuzz(func(t *testing.T, authz1, authz2, key1, key2 string, present uint8, query string) {
		h := fuzzedHeaders(present, authz1, authz2, key1, key2)
		got, problem := fx.server.credentials(h)
		checkCredentials(t, h, got, problem)

		req := httptest.NewRequest(http.MethodGet, "/auth", nil)
		req.Header = h.Clone()
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)

		checkForwardAuthStatus(t, h, rec, problem, got, tok)
		if rec.Code != http.StatusOK && rec.Header().Get(HeaderUser) != "" {
			t.Fatalf("identity on a %d", rec.Code)
		}
		assertNoSecrets(t, rec.Header(), rec.Body.String(), []string{tok})
	})
}

// fuzzedHeaders holds the Authorization and X-API-Key headers FuzzCredentials
// sends: bits 0 and 1 of present add authz1 and authz2 as Authorization
// headers, bits 2 and 3 add key1 and key2 as X-API-Key headers.
func fuzzedHeaders(present uint8, authz1, authz2, key1, key2 string) http.Header {
	h := http.Header{}
	if present&0b0001 != 0 {
		h.Add("Authorization", authz1)
	}
	if present&0b0010 != 0 {
		h.Add("Authorization", authz2)
	}
	if present&0b0100 != 0 {
		h.Add("X-API-Key", key1)
	}
	if present&0b1000 != 0 {
		h.Add("X-API-Key", key2)
	}
	return h
}

// checkCredentials fails t unless credentials(h) gave got and problem as its
// contract says: missing with no candidate header, malformed with several,
// and otherwise a token that is part of the one candidate.
func checkCredentials(t *testing.T, h http.Header, got string, problem credentialsProblem) {
	t.Helper()
	candidates := append(append([]string(nil), h["Authorization"]...), h["X-Api-Key"]...)
	switch {
	case len(candidates) > 1 && problem != credentialsMalformed:
		t.Fatalf("%d candidate headers: problem %d, want malformed", len(candidates), problem)
	case len(candidates) == 0 && problem != credentialsMissing:
		t.Fatalf("no candidate headers: problem %d, want missing", problem)
	case problem != credentialsOK && got != "":
		t.Fatalf("problem %d with a token", problem)
	case problem == credentialsOK:
		if got == "" || strings.ContainsAny(got, " \t") || !strings.Contains(candidates[0], got) {
			t.Fatalf("credentials returned %q from %q", got, candidates)
		}
		checkBearerScheme(t, h)
	}
}

// checkBearerScheme fails t if a token was taken from an Authorization
// header whose scheme is not Bearer.
func checkBearerScheme(t *testing.T, h http.Header) {
	t.Helper()
	if len(h["Authorization"]) != 1 {
		return
	}
	v := h["Authorization"][0]
	if !strings.EqualFold(v[:6], "bearer") || v[6] != ' ' && v[6] != '\t' {
		t.Fatalf("token taken from a non-Bearer Authorization %q", v)
	}
}

// checkForwardAuthStatus fails t unless the forward-auth answer rec to
// headers h fits what credentials found in them (problem, got): 431 for
// oversized headers, 200 only for tok with its user, 403 only for tok with
// the scope challenge, and 401 with the challenge that names the problem.
func checkForwardAuthStatus(t *testing.T, h http.Header, rec *httptest.ResponseRecorder, problem credentialsProblem, got, tok string) {
	t.Helper()
	challenge := rec.Header().Get("WWW-Authenticate")
	switch {
	case headerBytes(h) > maxHeaderBytes:
		if rec.Code != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%d bytes of headers: status %d, want 431", headerBytes(h), rec.Code)
		}
	case rec.Code == http.StatusOK:
		if problem != credentialsOK || got != tok || challenge != "" || rec.Header().Get(HeaderUser) != fixtureUsername {
			t.Fatalf("200 for credentials %d, user %q, challenge %q", problem, rec.Header().Get(HeaderUser), challenge)
		}
	case rec.Code == http.StatusForbidden:
		if got != tok || challenge != challengeScope {
			t.Fatalf("403 with challenge %q", challenge)
		}
	case rec.Code == http.StatusUnauthorized:
		want := map[credentialsProblem]string{
			credentialsOK:        challengeInvalidToken,
			credentialsMissing:   challengeNoToken,
			credentialsMalformed: challengeBadRequest,
		}[problem]
		if challenge != want {
			t.Fatalf("401 with challenge %q, want %q", challenge, want)
		}
	default:
		t.Fatalf("status %d", rec.Code)
	}
}

// FuzzTokenReview sends arbitrary bodies to /tokenreview, on a synced and
// on a loading index. It never panics or answers 5xx; a 200 is a
// TokenReview echoing the request's (valid) apiVersion, authenticated only
// for the fixture's token and only once the index synced.
func FuzzTokenReview(f *testing.F) {
	fx := newAuthFixture(f)
	synced := fx.server.Handler()
	notSynced := fx.unsynced().Handler()

	methods := []string{http.MethodPost, http.MethodGet, http.MethodPut, http.MethodPatch}
	for _, body := range []string{
		tokenReviewBody("authentication.k8s.io/v1", fx.token),
		tokenReviewBody("authentication.k8s.io/v1beta1", fx.token, "api", "https://kubernetes.default.svc"),
		strings.Replace(tokenReviewV1Body, "%q", `"`+fx.token+`"`, 1),
		tokenReviewBody("authentication.k8s.io/v1", flipLast(fx.token)),
		tokenReviewBody("authentication.k8s.io/v2", fx.token),
		tokenReviewBody("authorization.k8s.io/v1", fx.token),
		`{"KIND":"TokenReview","APIVERSION":"authentication.k8s.io/v1","SPEC":{"TOKEN":"x"}}`,
		`{"kind":"TokenReview","apiVersion":"x","apiVersion":"authentication.k8s.io/v1"}`,
		`{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"\ud800"}}`,
		`{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"ak_` + "\xff" + `"}}`,
		`{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":1e999}}`,
		`{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","metadata":{"name":{"x":[]}}}`,
		"", "null", "[]", "{", `"TokenReview"`,
	} {
		f.Add([]byte(body), uint8(0), true)
	}
	f.Add([]byte(tokenReviewBody("authentication.k8s.io/v1", fx.token)), uint8(0), false)
	f.Add([]byte(tokenReviewBody("authentication.k8s.io/v1", fx.token)), uint8(1), true)

	f.Fuzz(func(t *testing.T, body []byte, method uint8, isSynced bool) {
		m := methods[int(method)%len(methods)]
		handler := synced
		if !isSynced {
			handler = notSynced
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(m, "/tokenreview", bytes.NewReader(body)))
		assertNoSecrets(t, rec.Header(), rec.Body.String(), []string{fx.token})

		if !tokenReviewAnswered(t, m, rec.Code) {
			return
		}
		asked, answer := tokenReviewExchange(t, m, body, rec.Body.Bytes())
		checkTokenReviewStatus(t, answer.Status, isSynced, asked.Spec.Token == fx.token)
	})
}

// tokenReviewAnswered fails t on a status /tokenreview must not give a
// request with method m, and reports whether it answered 200 with a review.
func tokenReviewAnswered(t *testing.T, m string, code int) bool {
	t.Helper()
	switch code {
	case http.StatusOK:
		return true
	case http.StatusMethodNotAllowed:
		if m == http.MethodPost {
			t.Fatal("405 for POST")
		}
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		if m != http.MethodPost {
			t.Fatalf("%d for %s, want 405", code, m)
		}
	default:
		t.Fatalf("status %d", code)
	}
	return false
}

// tokenReviewExchange decodes a 200 exchange: the TokenReview asked for in
// body and the one answered in answerBody. It fails t unless the request was
// a POST of a valid body and the answer echoes its (valid) apiVersion.
func tokenReviewExchange(t *testing.T, m string, body, answerBody []byte) (asked, answer authenticationv1.TokenReview) {
	t.Helper()
	if m != http.MethodPost || !utf8.Valid(body) || len(body) > maxBodyBytes {
		t.Fatalf("200 for %s of %d bytes (UTF-8 %v)", m, len(body), utf8.Valid(body))
	}
	if err := json.Unmarshal(body, &asked); err != nil {
		t.Fatalf("200 for a body that is not a TokenReview: %v", err)
	}
	if err := json.Unmarshal(answerBody, &answer); err != nil {
		t.Fatalf("answer is not a TokenReview: %v", err)
	}
	if answer.Kind != "TokenReview" ||
		answer.APIVersion != "authentication.k8s.io/v1" && answer.APIVersion != "authentication.k8s.io/v1beta1" ||
		answer.TypeMeta != (metav1.TypeMeta{Kind: asked.Kind, APIVersion: asked.APIVersion}) {
		t.Fatalf("answer %s %s to a request %s %s", answer.APIVersion, answer.Kind, asked.APIVersion, asked.Kind)
	}
	return asked, answer
}

// checkTokenReviewStatus fails t unless st refuses every token before the
// index synced, and after it authenticates the fixture's token (and only
// that) as the fixture's user.
func checkTokenReviewStatus(t *testing.T, st authenticationv1.TokenReviewStatus, isSynced, isFixtureToken bool) {
	t.Helper()
	if !isSynced {
		if st.Authenticated || st.Error == "" {
			t.Fatalf("before sync: authenticated=%v error=%q", st.Authenticated, st.Error)
		}
		return
	}
	if st.Error != "" {
		t.Fatalf("status.error %q after sync", st.Error)
	}
	if st.Authenticated != isFixtureToken {
		t.Fatalf("authenticated=%v for a token that is the fixture's: %v", st.Authenticated, isFixtureToken)
	}
	if st.Authenticated && st.User.Username != fixtureUsername {
		t.Fatalf("authenticated as %q", st.User.Username)
	}
}

// TestFuzzCorpusToken checks that the seed files under testdata/fuzz still
// name the fixture's token, so they keep reaching the accepting paths.
func TestFuzzCorpusToken(t *testing.T) {
	if got := newAuthFixture(t).token; got != fixtureToken {
		t.Fatalf("the fixture issues %s, not fixtureToken", token.Hint(got))
	}
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	naming := 0
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(fixtureToken)) {
			naming++
		}
	}
	if naming < 4 {
		t.Errorf("%d of %d seed files name the fixture's token, want at least 4", naming, len(files))
	}
}
