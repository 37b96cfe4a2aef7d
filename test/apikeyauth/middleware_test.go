package apikeyauth_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apikey-operator/apikey-operator/internal/token"
	"github.com/apikey-operator/apikey-operator/pkg/apikeyauth"

	"github.com/apikey-operator/apikey-operator/test/utils"
)

// protected is a handler behind Middleware that records what reached it.
type protected struct {
	called   bool
	identity *apikeyauth.Identity
	header   http.Header
}

func (p *protected) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.called = true
	p.identity, _ = apikeyauth.FromContext(r.Context())
	p.header = r.Header.Clone()
	w.WriteHeader(http.StatusOK)
}

func serve(h http.Handler, header http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	r.Header = header
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestMiddleware(t *testing.T) {
	as := startAuthServer(t, true)
	valid := as.issue(t, "orders", nil)
	suspended := as.issue(t, "suspended", nil)
	as.setKey(suspended, true)
	unknown, err := token.Generate("ak")
	if err != nil {
		t.Fatal(err)
	}
	c := as.client(t, apikeyauth.Config{})

	tests := []struct {
		name          string
		scopes        []string
		header        http.Header
		wantStatus    int
		wantChallenge string
	}{
		{name: "bearer", header: http.Header{"Authorization": {"Bearer " + valid.token}}, wantStatus: http.StatusOK},
		{name: "bearer in any case, tab", header: http.Header{"Authorization": {"bEaReR\t" + valid.token}}, wantStatus: http.StatusOK},
		{name: "X-API-Key", header: http.Header{"X-Api-Key": {valid.token}}, wantStatus: http.StatusOK},
		{name: "required scopes held", scopes: []string{"orders:read", "billing:refunds"},
			header: http.Header{"Authorization": {"Bearer " + valid.token}}, wantStatus: http.StatusOK},
		{name: "no token", header: http.Header{}, wantStatus: http.StatusUnauthorized, wantChallenge: `Bearer realm="apikeys"`},
		{name: "basic auth", header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}},
			wantStatus: http.StatusUnauthorized, wantChallenge: `Bearer realm="apikeys"`},
		{name: "empty bearer", header: http.Header{"Authorization": {"Bearer   "}},
			wantStatus: http.StatusUnauthorized, wantChallenge: `Bearer error="invalid_token"`},
		{name: "unknown token", header: http.Header{"Authorization": {"Bearer " + unknown}},
			wantStatus: http.StatusUnauthorized, wantChallenge: `Bearer error="invalid_token"`},
		{name: "garbage token", header: http.Header{"X-Api-Key": {"hunter2"}},
			wantStatus: http.StatusUnauthorized, wantChallenge: `Bearer error="invalid_token"`},
		{name: "suspended key", header: http.Header{"Authorization": {"Bearer " + suspended.token}},
			wantStatus: http.StatusUnauthorized, wantChallenge: `Bearer error="invalid_token"`},
		{name: "missing scope", scopes: []string{"orders:write"}, header: http.Header{"Authorization": {"Bearer " + valid.token}},
			wantStatus: http.StatusForbidden, wantChallenge: `Bearer error="insufficient_scope"`},
		{name: "both headers", header: http.Header{"Authorization": {"Bearer " + valid.token}, "X-Api-Key": {valid.token}},
			wantStatus: http.StatusBadRequest, wantChallenge: `Bearer error="invalid_request"`},
		{name: "two Authorization headers", header: http.Header{"Authorization": {"Bearer " + valid.token, "Bearer " + unknown}},
			wantStatus: http.StatusBadRequest, wantChallenge: `Bearer error="invalid_request"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := &protected{}
			sent := tt.header.Clone()
			w := serve(c.Middleware(tt.scopes...)(next), tt.header)

			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", w.Code, tt.wantStatus, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantChallenge)
			}
			if next.called != (tt.wantStatus == http.StatusOK) {
				t.Fatalf("next called = %t with status %d", next.called, w.Code)
			}
			for _, tok := range []string{valid.token, suspended.token, unknown} {
				if strings.Contains(w.Body.String(), tok) || strings.Contains(fmt.Sprint(w.Header()), tok) {
					t.Errorf("the response repeats a token: %q %v", w.Body, w.Header())
				}
			}
			if !next.called {
				return
			}
			if next.identity == nil || next.identity.Username != "apikey:team-a:orders" || next.identity.Name != "orders" {
				t.Errorf("identity in context = %+v, want the orders key's", next.identity)
			}
			if fmt.Sprint(next.header) != fmt.Sprint(sent) {
				t.Errorf("next saw headers %v, want the request's own %v", next.header, sent)
			}
		})
	}
}

func TestMiddlewareIgnoresIdentityHeaders(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})
	next := &protected{}

	serve(c.Middleware()(next), http.Header{
		"Authorization":         {"Bearer " + k.token},
		"X-Auth-Request-User":   {"system:admin"},
		"X-Auth-Request-Groups": {"system:masters"},
	})
	if next.identity == nil || next.identity.Username != "apikey:team-a:orders" ||
		strings.Join(next.identity.Groups, ",") != "apikeys,apikeys:team-a" {
		t.Errorf("identity = %+v, want only what the auth server answered", next.identity)
	}
}

func TestMiddlewareUnavailable(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	c := as.client(t, apikeyauth.Config{})
	as.server.Close()
	next := &protected{}

	w := serve(c.Middleware()(next), http.Header{"Authorization": {"Bearer " + k.token}})
	if w.Code != http.StatusServiceUnavailable || next.called {
		t.Errorf("status = %d, next called = %t; want 503 and not called", w.Code, next.called)
	}
	if strings.Contains(w.Body.String(), k.token) {
		t.Errorf("the response repeats the token: %q", w.Body)
	}
}

func TestMiddlewareRefusesSuspendedKeyAfterCacheTTL(t *testing.T) {
	as := startAuthServer(t, true)
	k := as.issue(t, "orders", nil)
	// The real clock: this is what a service sees, with short TTLs.
	c := as.client(t, apikeyauth.Config{CacheTTL: 50 * time.Millisecond, NegativeCacheTTL: 20 * time.Millisecond, Now: time.Now})
	h := c.Middleware()(&protected{})
	status := func() int { return serve(h, http.Header{"Authorization": {"Bearer " + k.token}}).Code }

	if got := status(); got != http.StatusOK {
		t.Fatalf("status before suspension = %d, want 200", got)
	}
	as.setKey(k, true)
	eventually(t, func() bool { return status() == http.StatusUnauthorized })
	as.setKey(k, false)
	eventually(t, func() bool { return status() == http.StatusOK })
}

// TestTokensNeverLeak drives every way of refusing or failing and checks
// that no error, response, server log or package log holds a token.
func TestTokensNeverLeak(t *testing.T) {
	var logged utils.LogBuffer
	log.SetOutput(&logged)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })

	as := startAuthServer(t, false)
	valid := as.issue(t, "orders", nil)
	suspended := as.issue(t, "suspended", nil)
	as.setKey(suspended, true)
	unknown, err := token.Generate("ak")
	if err != nil {
		t.Fatal(err)
	}
	tokens := []string{valid.token, suspended.token, unknown, "ghp_notoursnotoursnotours"}

	var seen []string
	try := func(c *apikeyauth.Client, scopes ...string) {
		for _, tok := range tokens {
			if _, err := c.Verify(t.Context(), tok, scopes...); err != nil {
				seen = append(seen, err.Error(), fmt.Sprintf("%+v %#v", err, err))
			}
			for _, header := range []http.Header{{"Authorization": {"Bearer " + tok}}, {"X-Api-Key": {tok}}} {
				w := serve(c.Middleware(scopes...)(&protected{}), header)
				seen = append(seen, w.Body.String(), fmt.Sprint(w.Header()))
			}
		}
	}

	plain := as.client(t, apikeyauth.Config{})
	try(plain) // not synced: 503
	as.index.MarkSynced()
	try(plain)
	try(as.client(t, apikeyauth.Config{}), "orders:write")
	try(as.client(t, apikeyauth.Config{Audience: "elsewhere"}))
	try(as.client(t, apikeyauth.Config{CAFile: writePEM(t, "other.crt", otherCA(t))}))
	release := as.holdRequests()
	try(as.client(t, apikeyauth.Config{Timeout: 10 * time.Millisecond}))
	release()
	as.server.Close()
	try(plain)

	seen = append(seen, logged.String(), as.errorLog.String())
	for _, s := range seen {
		for _, tok := range tokens {
			body := tok[strings.LastIndexByte(tok, '_')+1:]
			if strings.Contains(s, body) {
				t.Errorf("output holds a token: %q", s)
			}
		}
	}
}

// TestConcurrentUse runs Verify and Middleware from many goroutines while
// keys change, answers expire and the small cache evicts; run with -race.
func TestConcurrentUse(t *testing.T) {
	as := startAuthServer(t, true)
	keys := make([]testKey, 4)
	unknown := make([]string, 4)
	for i := range keys {
		keys[i] = as.issue(t, fmt.Sprintf("key-%d", i), nil)
		tok, err := token.Generate("ak")
		if err != nil {
			t.Fatal(err)
		}
		unknown[i] = tok
	}
	c := as.client(t, apikeyauth.Config{CacheSize: 5, CacheTTL: time.Second, NegativeCacheTTL: 500 * time.Millisecond})
	h := c.Middleware("orders:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := apikeyauth.FromContext(r.Context()); !ok {
			t.Error("handler reached without an identity")
		}
	}))

	ctx, stop := context.WithCancel(t.Context())
	var churn sync.WaitGroup
	churn.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; i++ {
			as.clock.Advance(100 * time.Millisecond)
			as.setKey(keys[i%len(keys)], i%2 == 0)
			<-tick.C
		}
	})

	var workers sync.WaitGroup
	for w := range 16 {
		workers.Go(func() {
			for i := range 200 {
				useConcurrently(t, c, h, keys[(w+i)%len(keys)], unknown[i%len(unknown)], i)
			}
		})
	}
	workers.Wait()
	stop()
	churn.Wait()
	if n := c.CacheLen(); n > 5 {
		t.Errorf("cache holds %d answers, more than CacheSize 5", n)
	}
}

// useConcurrently is one call of a TestConcurrentUse worker: a key's token
// through Verify or Middleware, or an unknown token.
func useConcurrently(t *testing.T, c *apikeyauth.Client, h http.Handler, k testKey, unknown string, call int) {
	switch call % 3 {
	case 0:
		if _, err := c.Verify(t.Context(), k.token, "billing:x"); err != nil && !errors.Is(err, apikeyauth.ErrSuspended) {
			t.Errorf("Verify(%s) = %v", k.name, err)
		}
	case 1:
		if _, err := c.Verify(t.Context(), unknown); !errors.Is(err, apikeyauth.ErrNotFound) {
			t.Errorf("Verify(unknown) = %v", err)
		}
	case 2:
		code := serve(h, http.Header{"Authorization": {"Bearer " + k.token}}).Code
		if code != http.StatusOK && code != http.StatusUnauthorized {
			t.Errorf("middleware status %d", code)
		}
	}
}
