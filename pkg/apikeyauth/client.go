package apikeyauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout          = 2 * time.Second
	DefaultCacheTTL         = time.Second
	DefaultNegativeCacheTTL = 2 * time.Second
	DefaultCacheSize        = 10000
)

// maxAnswerBytes bounds how much of the auth server's answer is read.
const maxAnswerBytes = 1 << 20

// Config configures a Client. URL is required, and so is Namespaces or
// AnyNamespace.
type Config struct {
	// URL is the auth server's base URL, for example
	// https://apikey-operator-webhook-service.apikey-operator-system.svc.
	// Verify posts to its path plus /verify. It must be https: the token
	// travels in the request.
	URL string

	// CAFile is a PEM file of the CA certificates that sign the auth
	// server's certificate, such as ca.crt of the operator's webhook Secret.
	// It is read again whenever it changes on disk, so a rotated certificate
	// is trusted without a restart. Empty means the system roots.
	CAFile string

	// HTTPClient, if set, sends the requests instead of a client built from
	// CAFile, and so decides TLS; setting both is an error. Redirects are
	// never followed, even by this client.
	HTTPClient *http.Client

	// Timeout bounds one request to the auth server. Default 2s.
	Timeout time.Duration

	// CacheTTL is how long a valid answer is reused, and so how long a
	// revoked or suspended key may still be accepted by this Client. A
	// cached answer never outlives the token's expiry. Default 1s;
	// negative turns off caching of valid answers.
	CacheTTL time.Duration

	// NegativeCacheTTL is how long a rejection is reused, and so how long a
	// newly created or resumed key may still be refused. Default 2s;
	// negative turns off caching of rejections.
	NegativeCacheTTL time.Duration

	// CacheSize bounds the number of cached answers. When the cache is full,
	// the least recently used rejection is evicted, and a valid answer only
	// when no rejection is left: a flood of made-up tokens never pushes out
	// the valid answers. Default 10000; negative
	// turns the cache off.
	CacheSize int

	// Audience is sent with every verify. A key limited to audiences is
	// valid only if it lists this one. Empty names no audience.
	Audience string

	// Namespaces, sent with every verify, are the namespaces whose keys
	// this service accepts; a key from any other is rejected with
	// AUDIENCE_MISMATCH. A key's scopes are claimed by whoever may create
	// ApiKeys in its namespace, so without this list any tenant of the
	// cluster could mint a key with the scopes this service checks. New
	// requires it or AnyNamespace.
	Namespaces []string

	// AnyNamespace accepts keys from every namespace. Set it only for a
	// service that trusts every tenant's keys alike: one that checks no
	// scopes and only wants to know who is calling. It cannot be set with
	// Namespaces.
	AnyNamespace bool

	// Now is the clock the cache expires answers by. Default time.Now; a
	// test can set a fake clock to move past a TTL without waiting.
	Now func() time.Time
}

// Client verifies tokens with the auth server. It is safe for concurrent
// use; create one per process and share it.
type Client struct {
	verifyURL   string
	audience    string
	namespaces  []string
	timeout     time.Duration
	positiveTTL time.Duration
	negativeTTL time.Duration
	now         func() time.Time
	httpClient  func() *http.Client
	cache       *answerCache // nil when caching is off

	flightsMu sync.Mutex
	flights   map[cacheKey]*flight
}

// flight is one request to the auth server that concurrent Verify calls
// for the same question wait on together.
type flight struct {
	done   chan struct{}
	answer *answer
	err    error
}

// Identity is who a valid token authenticates as, as the auth server
// answered. Each Verify returns its own copy.
type Identity struct {
	// Username is the user the key authenticates as, for example
	// apikey:team-a:orders.
	Username string
	// UID is the user's UID, if any.
	UID string
	// Groups are the user's groups.
	Groups []string
	// Scopes are every scope the key carries, not only those asked for.
	Scopes []string
	// ExpiresAt is when the token stops working; zero if it does not expire.
	ExpiresAt time.Time
	// Namespace is the namespace of the ApiKey the token was issued for.
	Namespace string
	// Name is the name of the ApiKey the token was issued for.
	Name string
}

func (id *Identity) clone() *Identity {
	c := *id
	c.Groups = slices.Clone(id.Groups)
	c.Scopes = slices.Clone(id.Scopes)
	return &c
}

// New returns a Client for cfg. It fails if cfg.URL is not an https URL,
// if both CAFile and HTTPClient are set, if CAFile holds no certificate, or
// unless exactly one of Namespaces and AnyNamespace is set: a service that
// forgets to say whose keys it trusts fails to start rather than open.
func New(cfg Config) (*Client, error) {
	u, err := cfg.check()
	if err != nil {
		return nil, err
	}
	c := &Client{
		verifyURL:   u.JoinPath("verify").String(),
		audience:    cfg.Audience,
		namespaces:  slices.Clone(cfg.Namespaces),
		timeout:     orDefault(cfg.Timeout, DefaultTimeout),
		positiveTTL: orDefault(cfg.CacheTTL, DefaultCacheTTL),
		negativeTTL: orDefault(cfg.NegativeCacheTTL, DefaultNegativeCacheTTL),
		now:         cfg.Now,
		flights:     map[cacheKey]*flight{},
	}
	if c.now == nil {
		c.now = time.Now
	}
	if size := orDefault(cfg.CacheSize, DefaultCacheSize); size > 0 && (c.positiveTTL > 0 || c.negativeTTL > 0) {
		c.cache = newAnswerCache(size)
	}

	switch {
	case cfg.HTTPClient != nil:
		hc := *cfg.HTTPClient
		hc.CheckRedirect = refuseRedirects
		c.httpClient = func() *http.Client { return &hc }
	case cfg.CAFile != "":
		trust, err := newCATrust(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		c.httpClient = trust.client
	default:
		hc := newHTTPClient(nil)
		c.httpClient = func() *http.Client { return hc }
	}
	return c, nil
}

// check returns cfg's URL, parsed, or what is wrong with cfg.
func (cfg *Config) check() (*url.URL, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case err != nil || u.Scheme != "https" || u.Host == "":
		return nil, fmt.Errorf("apikeyauth: URL %q is not an https URL with a host", cfg.URL)
	case cfg.CAFile != "" && cfg.HTTPClient != nil:
		return nil, errors.New("apikeyauth: set CAFile or HTTPClient, not both")
	case len(cfg.Namespaces) == 0 && !cfg.AnyNamespace:
		return nil, errors.New("apikeyauth: set Namespaces to the namespaces whose keys this service trusts " +
			"(or AnyNamespace, to accept every tenant's keys)")
	case len(cfg.Namespaces) > 0 && cfg.AnyNamespace:
		return nil, errors.New("apikeyauth: set Namespaces or AnyNamespace, not both")
	case cfg.Timeout < 0:
		return nil, errors.New("apikeyauth: Timeout must not be negative")
	}
	return u, nil
}

// CacheLen is the number of answers in the cache, expired ones not yet
// evicted included; 0 when caching is off.
func (c *Client) CacheLen() int {
	if c.cache == nil {
		return 0
	}
	return c.cache.len()
}

func orDefault[T time.Duration | int](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Verify asks whether token is valid and carries every one of scopes (all
// are required; a key scope "x:*" grants any "x:…", "*" grants all). It
// returns the token's identity, or an error: a *RejectedError (match it with
// errors.As, or errors.Is against ErrNotFound and the other sentinels) when
// the auth server refused the token, or one wrapping ErrUnavailable when it
// gave no answer. Answers are cached; see Config.
func (c *Client) Verify(ctx context.Context, token string, scopes ...string) (*Identity, error) {
	return c.verify(ctx, token, newScopeSet(scopes))
}

func (c *Client) verify(ctx context.Context, token string, scopes scopeSet) (*Identity, error) {
	// The auth server would say the same; asking it would only cost a
	// request, however many made-up tokens a client sends.
	if !WellFormed(token) {
		return nil, &RejectedError{Code: CodeMalformed}
	}
	key := cacheKey{tokenSum: sha256.Sum256([]byte(token)), scopes: scopes.key}
	if c.cache != nil {
		if a, ok := c.cache.get(key, c.now()); ok {
			return a.result()
		}
	}
	a, err := c.ask(ctx, key, token, scopes.list)
	if err != nil {
		return nil, err
	}
	return a.result()
}

// ask returns the auth server's answer to the question key. Concurrent
// callers with the same question share one request, which runs to its own
// timeout even if they give up, so that its answer is cached for the next.
func (c *Client) ask(ctx context.Context, key cacheKey, token string, scopes []string) (*answer, error) {
	c.flightsMu.Lock()
	f, ok := c.flights[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		c.flights[key] = f
		go c.fly(context.WithoutCancel(ctx), key, f, token, scopes)
	}
	c.flightsMu.Unlock()

	select {
	case <-f.done:
		return f.answer, f.err
	case <-ctx.Done():
		return nil, unavailable(ctx.Err())
	}
}

// fly runs the request of f, caches its answer, and then releases the
// waiters; caching first means a later caller finds either the flight or
// the answer.
func (c *Client) fly(ctx context.Context, key cacheKey, f *flight, token string, scopes []string) {
	f.answer, f.err = c.post(ctx, token, scopes)
	if f.err == nil {
		c.remember(key, f.answer)
	}
	c.flightsMu.Lock()
	delete(c.flights, key)
	c.flightsMu.Unlock()
	close(f.done)
}

// remember caches a: a valid answer for CacheTTL but never past the token's
// expiry, a rejection for NegativeCacheTTL.
func (c *Client) remember(key cacheKey, a *answer) {
	if c.cache == nil {
		return
	}
	now := c.now()
	ttl := c.negativeTTL
	if a.identity != nil {
		ttl = c.positiveTTL
	}
	if ttl <= 0 {
		return
	}
	expires := now.Add(ttl)
	if a.identity != nil && !a.identity.ExpiresAt.IsZero() && a.identity.ExpiresAt.Before(expires) {
		expires = a.identity.ExpiresAt
	}
	if expires.After(now) {
		c.cache.put(key, a, expires, now)
	}
}

// post sends one verify request. Every error it returns wraps
// ErrUnavailable; none quotes the request body.
func (c *Client) post(ctx context.Context, token string, scopes []string) (*answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	body, err := json.Marshal(VerifyRequest{Token: token, Scopes: scopes, Audience: c.audience, Namespaces: c.namespaces})
	if err != nil {
		return nil, unavailable(errors.New("could not encode the verify request"))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.verifyURL, bytes.NewReader(body))
	if err != nil {
		return nil, unavailable(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")

	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, unavailable(err)
	}
	defer func() {
		// Draining lets the connection be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBytes))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return nil, unavailable(fmt.Errorf("POST %s answered %s", c.verifyURL, resp.Status))
	}

	var vr VerifyResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(&vr); err != nil {
		return nil, unavailable(fmt.Errorf("POST %s did not answer with the verify JSON", c.verifyURL))
	}
	switch {
	case vr.Valid && vr.Code == CodeValid && !c.inNamespaces(vr.APIKey):
		// An auth server older than namespaces ignores them: decide here too.
		return &answer{code: CodeAudienceMismatch}, nil
	case vr.Valid && vr.Code == CodeValid:
		return &answer{identity: identityOf(&vr)}, nil
	case !vr.Valid && vr.Code != "" && vr.Code != CodeValid:
		return &answer{code: vr.Code}, nil
	default:
		return nil, unavailable(fmt.Errorf("POST %s answered valid=%t with code %q", c.verifyURL, vr.Valid, vr.Code))
	}
}

// inNamespaces reports whether key is in one of the namespaces the client
// accepts (any, when Config.Namespaces is empty).
func (c *Client) inNamespaces(key *KeyRef) bool {
	return len(c.namespaces) == 0 || key != nil && slices.Contains(c.namespaces, key.Namespace)
}

func identityOf(vr *VerifyResponse) *Identity {
	id := &Identity{Username: vr.Username, UID: vr.UID, Groups: vr.Groups, Scopes: vr.Scopes}
	if vr.ExpiresAt != nil {
		id.ExpiresAt = *vr.ExpiresAt
	}
	if vr.APIKey != nil {
		id.Namespace, id.Name = vr.APIKey.Namespace, vr.APIKey.Name
	}
	return id
}
