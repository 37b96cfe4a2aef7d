package apikeyauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
	"github.com/apikey-operator/apikey-operator/pkg/apikeyauth"
)

func TestVerifyValidToken(t *testing.T) {
	as := startAuthServer(t, true)
	expires := as.clock.Now().Add(time.Hour).UTC().Truncate(time.Second)
	k := as.issue(t, "orders", func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
		s.ExpiresAt = &metav1.Time{Time: expires}
	})
	c := as.client(t, apikeyauth.Config{})

	id, err := c.Verify(t.Context(), k.token, "orders:read", "billing:invoices")
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := &apikeyauth.Identity{
		Username:  "apikey:team-a:orders",
		UID:       "uid-orders",
		Groups:    []string{"apikeys", "apikeys:team-a"},
		Scopes:    []string{"orders:read", "billing:*"},
		ExpiresAt: expires,
		Namespace: "team-a",
		Name:      "orders",
	}
	if !reflect.DeepEqual(id, want) {
		t.Errorf("Verify = %+v, want %+v", id, want)
	}
}

func TestVerifyRejects(t *testing.T) {
	as := startAuthServer(t, true)
	unknown, err := token.Generate("ak")
	if err != nil {
		t.Fatal(err)
	}
	expired := as.issue(t, "expired", func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
		s.ExpiresAt = &metav1.Time{Time: as.clock.Now().Add(-time.Second)}
	})
	suspended := as.issue(t, "suspended", nil)
	as.setKey(suspended, true)
	revoked := as.issue(t, "revoked", nil)
	as.index.DeleteKey(revoked.uid)
	audience := as.issue(t, "billing-only", func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
		s.Audiences = []string{"billing-api"}
	})
	valid := as.issue(t, "orders", nil)

	tests := []struct {
		name     string
		token    string
		scopes   []string
		audience string
		want     *apikeyauth.RejectedError
		asks     bool // whether the auth server is asked at all
	}{
		{name: "unknown token", token: unknown, want: apikeyauth.ErrNotFound, asks: true},
		{name: "foreign token", token: "ghp_" + strings.Repeat("x", 36), want: apikeyauth.ErrMalformed},
		{name: "checksum mistyped", token: valid.token[:len(valid.token)-1] + flipped(valid.token[len(valid.token)-1]), want: apikeyauth.ErrMalformed},
		{name: "empty token", token: "", want: apikeyauth.ErrMalformed},
		{name: "huge token", token: strings.Repeat("a", apikeyauth.MaxTokenLength+1), want: apikeyauth.ErrMalformed},
		{name: "not UTF-8", token: "ak_\xff\xfe", want: apikeyauth.ErrMalformed},
		{name: "expired", token: expired.token, want: apikeyauth.ErrExpired, asks: true},
		{name: "suspended", token: suspended.token, want: apikeyauth.ErrSuspended, asks: true},
		{name: "revoked", token: revoked.token, want: apikeyauth.ErrNotFound, asks: true},
		{name: "missing scope", token: valid.token, scopes: []string{"orders:read", "orders:write"}, want: apikeyauth.ErrInsufficientScope, asks: true},
		{name: "other audience", token: audience.token, audience: "orders-api", want: apikeyauth.ErrAudienceMismatch, asks: true},
		{name: "no audience", token: audience.token, want: apikeyauth.ErrAudienceMismatch, asks: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := as.client(t, apikeyauth.Config{Audience: tt.audience})
			before := as.verifies.Load()

			id, err := c.Verify(t.Context(), tt.token, tt.scopes...)
			var rejected *apikeyauth.RejectedError
			if !errors.As(err, &rejected) {
				t.Fatalf("Verify = %+v, %v; want a *RejectedError", id, err)
			}
			if rejected.Code != tt.want.Code || !errors.Is(err, tt.want) {
				t.Errorf("Verify error = %v, want code %s", err, tt.want.Code)
			}
			if errors.Is(err, apikeyauth.ErrUnavailable) {
				t.Errorf("a rejection matches ErrUnavailable: %v", err)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error %q contains the token", err)
			}
			if asked := as.verifies.Load() > before; asked != tt.asks {
				t.Errorf("auth server asked = %t, want %t", asked, tt.asks)
			}
		})
	}
}

// TestVerifyNamespaces checks that a client configured with the namespaces
// it trusts rejects a key from any other, though the key holds the scope
// asked for: scopes are claimed by whoever may create keys in a namespace.
func TestVerifyNamespaces(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	id, err := as.client(t, apikeyauth.Config{AnyNamespace: true}).Verify(t.Context(), k.token, "orders:read")
	if err != nil {
		t.Fatalf("Verify from any namespace: %v", err)
	}
	home := id.Namespace
	if _, err := as.client(t, apikeyauth.Config{Namespaces: []string{"team-search", home}}).Verify(t.Context(), k.token, "orders:read"); err != nil {
		t.Errorf("Verify trusting %s: %v", home, err)
	}
	_, err = as.client(t, apikeyauth.Config{Namespaces: []string{"team-search"}}).Verify(t.Context(), k.token, "orders:read")
	if !errors.Is(err, apikeyauth.ErrAudienceMismatch) {
		t.Errorf("Verify trusting only team-search = %v, want %v", err, apikeyauth.ErrAudienceMismatch)
	}
}

func TestVerifyAudienceAndWildcardScope(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "billing", func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
		s.Audiences = []string{"billing-api"}
	})
	c := as.client(t, apikeyauth.Config{Audience: "billing-api"})

	if _, err := c.Verify(t.Context(), k.token, "billing:invoices:read"); err != nil {
		t.Errorf("Verify with a scope under billing:* for the key's audience: %v", err)
	}
}

func TestCacheHitAvoidsRequest(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})
	ctx := t.Context()

	for range 3 {
		if _, err := c.Verify(ctx, k.token, "orders:read", "billing:x"); err != nil {
			t.Fatal(err)
		}
	}
	// The same requirement in another order, or repeated, is the same question.
	if _, err := c.Verify(ctx, k.token, "billing:x", "orders:read", "orders:read"); err != nil {
		t.Fatal(err)
	}
	if n := as.verifies.Load(); n != 1 {
		t.Fatalf("auth server asked %d times for one question, want 1", n)
	}
	// Other scopes are another question.
	if _, err := c.Verify(ctx, k.token); err != nil {
		t.Fatal(err)
	}
	if n := as.verifies.Load(); n != 2 {
		t.Errorf("auth server asked %d times for two questions, want 2", n)
	}
}

func TestNegativeAnswersCachedShorterThanPositive(t *testing.T) {
	as := startAuthServer(t, true)
	valid := as.issue(t, "orders", nil)
	unknown, err := token.Generate("ak")
	if err != nil {
		t.Fatal(err)
	}
	c := as.client(t, apikeyauth.Config{CacheTTL: 10 * time.Second, NegativeCacheTTL: 2 * time.Second})
	ctx := t.Context()
	verifyBoth := func() {
		t.Helper()
		if _, err := c.Verify(ctx, valid.token); err != nil {
			t.Fatalf("Verify(valid): %v", err)
		}
		if _, err := c.Verify(ctx, unknown); !errors.Is(err, apikeyauth.ErrNotFound) {
			t.Fatalf("Verify(unknown) = %v, want NOT_FOUND", err)
		}
	}
	wantAsked := func(want int64) {
		t.Helper()
		if n := as.verifies.Load(); n != want {
			t.Fatalf("auth server asked %d times, want %d", n, want)
		}
	}

	verifyBoth()
	wantAsked(2)
	verifyBoth()
	wantAsked(2)

	as.clock.Advance(2 * time.Second) // the rejection expires, the identity does not
	verifyBoth()
	wantAsked(3)

	as.clock.Advance(8 * time.Second) // now the identity expires too
	if _, err := c.Verify(ctx, valid.token); err != nil {
		t.Fatal(err)
	}
	wantAsked(4)
}

func TestCachedIdentityNeverOutlivesToken(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "short-lived", func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
		s.ExpiresAt = &metav1.Time{Time: as.clock.Now().Add(3 * time.Second)}
	})
	c := as.client(t, apikeyauth.Config{CacheTTL: time.Hour})
	ctx := t.Context()

	if _, err := c.Verify(ctx, k.token); err != nil {
		t.Fatal(err)
	}
	as.clock.Advance(2 * time.Second)
	if _, err := c.Verify(ctx, k.token); err != nil {
		t.Fatalf("Verify before expiry: %v", err)
	}
	if n := as.verifies.Load(); n != 1 {
		t.Fatalf("auth server asked %d times before expiry, want 1", n)
	}
	as.clock.Advance(time.Second)
	if _, err := c.Verify(ctx, k.token); !errors.Is(err, apikeyauth.ErrExpired) {
		t.Fatalf("Verify at expiry = %v, want EXPIRED from the auth server", err)
	}
}

func TestSuspensionTakesEffectAfterCacheTTL(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{CacheTTL: 5 * time.Second, NegativeCacheTTL: time.Second})
	ctx := t.Context()

	if _, err := c.Verify(ctx, k.token); err != nil {
		t.Fatal(err)
	}
	as.setKey(k, true)
	if _, err := c.Verify(ctx, k.token); err != nil {
		t.Fatalf("Verify within CacheTTL of the suspension = %v, want the cached identity", err)
	}
	as.clock.Advance(5 * time.Second)
	if _, err := c.Verify(ctx, k.token); !errors.Is(err, apikeyauth.ErrSuspended) {
		t.Fatalf("Verify after CacheTTL = %v, want SUSPENDED", err)
	}

	as.setKey(k, false)
	if _, err := c.Verify(ctx, k.token); !errors.Is(err, apikeyauth.ErrSuspended) {
		t.Fatalf("Verify within NegativeCacheTTL of resuming = %v, want the cached rejection", err)
	}
	as.clock.Advance(time.Second)
	if _, err := c.Verify(ctx, k.token); err != nil {
		t.Fatalf("Verify after NegativeCacheTTL: %v", err)
	}
}

// TestDefaultsRefuseASuspendedKeyWithinASecond: with the default cache, a
// suspension reaches a Go service a second after the auth server, as the
// plugin's "refused within a second" and a grace period of 0s lead users to
// expect; a key suspended because its token leaked is not good for longer.
func TestDefaultsRefuseASuspendedKeyWithinASecond(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})
	if _, err := c.Verify(t.Context(), k.token); err != nil {
		t.Fatal(err)
	}
	as.setKey(k, true)
	as.clock.Advance(time.Second)
	if _, err := c.Verify(t.Context(), k.token); !errors.Is(err, apikeyauth.ErrSuspended) {
		t.Fatalf("Verify a second after the suspension = %v, want SUSPENDED", err)
	}
}

func TestCacheIsBounded(t *testing.T) {
	as := startAuthServer(t, true)
	const size = 8
	c := as.client(t, apikeyauth.Config{CacheSize: size})
	ctx := t.Context()
	verify := func(tok string) {
		t.Helper()
		if _, err := c.Verify(ctx, tok); err != nil && !errors.Is(err, apikeyauth.ErrNotFound) {
			t.Fatal(err)
		}
		if n := c.CacheLen(); n > size {
			t.Fatalf("cache holds %d answers, more than CacheSize %d", n, size)
		}
	}
	newToken := func() string {
		tok, err := token.Generate("ak")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	hot := as.issue(t, "hot", nil).token
	verify(hot)
	for range 3 * size {
		verify(newToken())
		verify(hot) // a hit keeps it the most recently used
	}
	if n := c.CacheLen(); n != size {
		t.Errorf("cache holds %d answers after %d questions, want %d", n, 3*size+1, size)
	}
	if n := as.verifies.Load(); n != 3*size+1 {
		t.Errorf("auth server asked %d times, want %d: the recently used answer was evicted", n, 3*size+1)
	}
}

func TestCacheOff(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{CacheSize: -1})
	for range 3 {
		if _, err := c.Verify(t.Context(), k.token); err != nil {
			t.Fatal(err)
		}
	}
	if n := as.verifies.Load(); n != 3 {
		t.Errorf("auth server asked %d times for 3 verifies without a cache, want 3", n)
	}
}

func TestIdentityIsTheCallersCopy(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})

	first, err := c.Verify(t.Context(), k.token)
	if err != nil {
		t.Fatal(err)
	}
	first.Groups[0], first.Scopes[0] = "system:masters", "*"
	second, err := c.Verify(t.Context(), k.token)
	if err != nil {
		t.Fatal(err)
	}
	if second.Groups[0] != "apikeys" || second.Scopes[0] != "orders:read" {
		t.Errorf("a change to one caller's identity reached the next: %+v", second)
	}
}

func TestUnavailableIsNotCached(t *testing.T) {
	as := startAuthServer(t, false)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})
	ctx := t.Context()

	// The real server answers 503 until its index has synced.
	if _, err := c.Verify(ctx, k.token); !errors.Is(err, apikeyauth.ErrUnavailable) {
		t.Fatalf("Verify before the index synced = %v, want ErrUnavailable", err)
	}
	as.index.MarkSynced()
	if _, err := c.Verify(ctx, k.token); err != nil {
		t.Fatalf("Verify after the index synced: %v", err)
	}
	if n := as.verifies.Load(); n != 2 {
		t.Errorf("auth server asked %d times, want 2", n)
	}
}

func TestServerDown(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})
	as.server.Close()

	for range 2 {
		_, err := c.Verify(t.Context(), k.token)
		if !errors.Is(err, apikeyauth.ErrUnavailable) {
			t.Fatalf("Verify with the server down = %v, want ErrUnavailable", err)
		}
		var rejected *apikeyauth.RejectedError
		if errors.As(err, &rejected) {
			t.Fatalf("Verify with the server down is a rejection: %v", err)
		}
	}
	if n := c.CacheLen(); n != 0 {
		t.Errorf("cache holds %d answers after failures, want 0", n)
	}
}

func TestWrongCA(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{CAFile: writePEM(t, "other.crt", otherCA(t))})

	if _, err := c.Verify(t.Context(), k.token); !errors.Is(err, apikeyauth.ErrUnavailable) {
		t.Fatalf("Verify against an untrusted certificate = %v, want ErrUnavailable", err)
	}
	if n := as.verifies.Load(); n != 0 {
		t.Errorf("the token reached a server whose certificate is not trusted (%d requests)", n)
	}
}

func TestCAFileIsReloaded(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	caFile := writePEM(t, "ca.crt", otherCA(t))
	c := as.client(t, apikeyauth.Config{CAFile: caFile})
	ctx := t.Context()

	if _, err := c.Verify(ctx, k.token); !errors.Is(err, apikeyauth.ErrUnavailable) {
		t.Fatalf("Verify with the old CA = %v, want ErrUnavailable", err)
	}
	rotated, err := os.ReadFile(as.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, rotated, 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(caFile, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(ctx, k.token); err != nil {
		t.Fatalf("Verify after the CA file changed: %v", err)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, as.server.URL+"/verify", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	// httptest servers share one certificate, so the CA file trusts both.
	c, err := apikeyauth.New(apikeyauth.Config{URL: redirector.URL, CAFile: as.caFile, Namespaces: []string{keyNamespace}})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.Verify(t.Context(), k.token); !errors.Is(err, apikeyauth.ErrUnavailable) {
		t.Fatalf("Verify through a redirect = %v, want ErrUnavailable", err)
	}
	if n := as.verifies.Load(); n != 0 {
		t.Errorf("the token followed a redirect (%d requests)", n)
	}
}

func TestHTTPClientOverride(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{HTTPClient: as.server.Client()})

	if _, err := c.Verify(t.Context(), k.token); err != nil {
		t.Fatalf("Verify with the test server's own client: %v", err)
	}
}

func TestVerifyHonoursContextAndTimeout(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	release := as.holdRequests()
	defer release()

	t.Run("canceled", func(t *testing.T) {
		c := as.client(t, apikeyauth.Config{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := c.Verify(ctx, k.token)
		if !errors.Is(err, apikeyauth.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Errorf("Verify with a canceled context = %v, want ErrUnavailable and context.Canceled", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		c := as.client(t, apikeyauth.Config{Timeout: 50 * time.Millisecond})
		_, err := c.Verify(t.Context(), k.token)
		if !errors.Is(err, apikeyauth.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Verify past Timeout = %v, want ErrUnavailable and context.DeadlineExceeded", err)
		}
	})
}

func TestConcurrentMissesShareOneRequest(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})
	release := as.holdRequests()

	const callers = 16
	var started, done sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			_, err := c.Verify(context.Background(), k.token)
			errs <- err
		}()
	}
	started.Wait()
	eventually(t, func() bool { return as.verifies.Load() > 0 })
	release()
	done.Wait()
	close(errs)

	for err := range errs {
		if err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
	if n := as.verifies.Load(); n != 1 {
		t.Errorf("auth server asked %d times by %d concurrent callers, want 1", n, callers)
	}
}

func TestAbandonedRequestStillAnswersTheNextCaller(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})
	release := as.holdRequests()

	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Verify(ctx, k.token)
		errc <- err
	}()
	eventually(t, func() bool { return as.verifies.Load() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify whose caller gave up = %v, want context.Canceled", err)
	}

	release()
	eventually(t, func() bool { return c.CacheLen() == 1 })
	if _, err := c.Verify(t.Context(), k.token); err != nil {
		t.Fatal(err)
	}
	if n := as.verifies.Load(); n != 1 {
		t.Errorf("auth server asked %d times, want 1: the abandoned request's answer was not kept", n)
	}
}

// flipped is another base62 character than c.
func flipped(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// FuzzWellFormed holds the client's own reading of the token format to the
// operator's parser, on any input: what WellFormed refuses without asking,
// the auth server would have answered MALFORMED.
func FuzzWellFormed(f *testing.F) {
	tok, err := token.Generate("ak")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{tok, "ro_pat_" + tok[3:], tok[:len(tok)-1] + "A", "", "_", "ak_", "ghp_x", tok + "\n", "Bearer " + tok} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, parseErr := token.Parse(s)
		if got := apikeyauth.WellFormed(s); got != (parseErr == nil) {
			t.Fatalf("WellFormed = %v, token.Parse: %v", got, parseErr)
		}
	})
}
