package authserver

import (
	"slices"
	"strings"
	"testing"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

func TestVerify(t *testing.T) {
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	valid := stableToken(apikeysv1alpha1.DefaultPrefix, "verify")
	roPat := stableToken("ro_pat", "verify-ro-pat")
	expiry := fixtureNow.Add(time.Hour)
	graceEnd := expiry.Add(-10 * time.Minute)

	// live indexes key with valid's record, changed by edits.
	live := func(edits ...func(*apikeysv1alpha1.ApiKeyRecordSpec)) func(*Index) {
		return func(ix *Index) {
			ix.SetKey(key)
			ix.SetRecord(issuedRecord(valid, key, edits...))
		}
	}
	expiresAt := func(t time.Time) func(*apikeysv1alpha1.ApiKeyRecordSpec) {
		return func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.ExpiresAt = metaTime(t) }
	}
	validUntil := func(t time.Time) func(*apikeysv1alpha1.ApiKeyRecordSpec) {
		return func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.ValidUntil = metaTime(t) }
	}
	// then runs steps in order.
	then := func(steps ...func(*Index)) func(*Index) {
		return func(ix *Index) {
			for _, step := range steps {
				step(ix)
			}
		}
	}
	setKey := func(edit func(*apikeysv1alpha1.ApiKey)) func(*Index) {
		return func(ix *Index) {
			k := key.DeepCopy()
			edit(k)
			ix.SetKey(k)
		}
	}

	tests := []struct {
		name  string
		setup func(*Index)
		token string
		now   time.Time
		want  Code
	}{
		{name: "valid token", setup: live(), token: valid, want: CodeValid},
		{name: "valid token with a prefix containing '_'", setup: func(ix *Index) {
			ix.SetKey(key)
			ix.SetRecord(issuedRecord(roPat, key))
		}, token: roPat, want: CodeValid},
		{name: "unknown well-formed token", setup: live(), token: stableToken(apikeysv1alpha1.DefaultPrefix, "never issued"), want: CodeNotFound},
		{name: "unknown well-formed token of another prefix", setup: live(), token: stableToken("ghp", "foreign"), want: CodeNotFound},
		{name: "well-formed token, empty index", setup: func(*Index) {}, token: valid, want: CodeNotFound},

		{name: "empty", setup: live(), token: "", want: CodeMalformed},
		{name: "checksum typo", setup: live(), token: flipLast(valid), want: CodeMalformed},
		{name: "body typo", setup: live(), token: valid[:5] + flipChar(valid[5]) + valid[6:], want: CodeMalformed},
		{name: "truncated", setup: live(), token: valid[:len(valid)-1], want: CodeMalformed},
		{name: "trailing newline", setup: live(), token: valid + "\n", want: CodeMalformed},
		{name: "scheme included", setup: live(), token: "Bearer " + valid, want: CodeMalformed},
		{name: "uppercase prefix", setup: live(), token: "AK" + valid[2:], want: CodeMalformed},
		{name: "one byte over the longest token", setup: live(), token: strings.Repeat("a", token.MaxLength+1), want: CodeMalformed},
		{name: "huge", setup: live(), token: strings.Repeat(valid, 1<<14), want: CodeMalformed},
		{name: "garbage", setup: live(), token: "hunter2", want: CodeMalformed},
		{name: "JWT", setup: live(), token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", want: CodeMalformed},
		{name: "non-UTF-8", setup: live(), token: "ak_\xff\xfe" + valid[5:], want: CodeMalformed},
		{name: "non-ASCII UTF-8", setup: live(), token: strings.Replace(valid, valid[4:5], "é", 1), want: CodeMalformed},

		{name: "record present, ApiKey never seen", setup: func(ix *Index) {
			ix.SetRecord(issuedRecord(valid, key))
		}, token: valid, want: CodeNotFound},
		{name: "ApiKey deleting", setup: then(live(), setKey(func(k *apikeysv1alpha1.ApiKey) {
			k.DeletionTimestamp = metaTime(fixtureNow.Add(-time.Second))
			k.Finalizers = []string{"apikeys.dev/records"}
		})), token: valid, want: CodeNotFound},
		{name: "ApiKey deleting and suspended", setup: then(live(), setKey(func(k *apikeysv1alpha1.ApiKey) {
			k.DeletionTimestamp = metaTime(fixtureNow)
			k.Spec.Suspended = true
		})), token: valid, want: CodeNotFound},
		{name: "ApiKey deleted", setup: then(live(), func(ix *Index) { ix.DeleteKey(key.UID) }), token: valid, want: CodeNotFound},
		{name: "another ApiKey deleted", setup: then(live(), func(ix *Index) { ix.DeleteKey("other-uid") }), token: valid, want: CodeValid},
		{name: "record deleted", setup: then(live(), func(ix *Index) { ix.DeleteRecord(issuedRecord(valid, key).Name) }),
			token: valid, want: CodeNotFound},

		{name: "record suspended", setup: live(func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Suspended = true }),
			token: valid, want: CodeSuspended},
		{name: "ApiKey suspended", setup: then(live(), setKey(func(k *apikeysv1alpha1.ApiKey) { k.Spec.Suspended = true })),
			token: valid, want: CodeSuspended},
		{name: "ApiKey suspended, then resumed", setup: then(live(),
			setKey(func(k *apikeysv1alpha1.ApiKey) { k.Spec.Suspended = true }),
			setKey(func(k *apikeysv1alpha1.ApiKey) { k.Spec.Suspended = false }),
		), token: valid, want: CodeValid},

		{name: "no expiry, far future", setup: live(), token: valid, now: fixtureNow.AddDate(100, 0, 0), want: CodeValid},
		{name: "one nanosecond before expiry", setup: live(expiresAt(expiry)), token: valid, now: expiry.Add(-time.Nanosecond), want: CodeValid},
		{name: "exactly at expiry", setup: live(expiresAt(expiry)), token: valid, now: expiry, want: CodeExpired},
		{name: "after expiry", setup: live(expiresAt(expiry)), token: valid, now: expiry.Add(time.Second), want: CodeExpired},
		{name: "expiry in another time zone", setup: live(expiresAt(expiry.In(time.FixedZone("UTC+5", 5*3600)))),
			token: valid, now: expiry, want: CodeExpired},
		{name: "grace period ends before expiry: one nanosecond before", setup: live(expiresAt(expiry), validUntil(graceEnd)),
			token: valid, now: graceEnd.Add(-time.Nanosecond), want: CodeValid},
		{name: "grace period ends before expiry: at its end", setup: live(expiresAt(expiry), validUntil(graceEnd)),
			token: valid, now: graceEnd, want: CodeExpired},
		{name: "grace period ends after expiry: expiry wins", setup: live(expiresAt(graceEnd), validUntil(expiry)),
			token: valid, now: graceEnd, want: CodeExpired},
		{name: "grace period without expiry: one nanosecond before", setup: live(validUntil(graceEnd)),
			token: valid, now: graceEnd.Add(-time.Nanosecond), want: CodeValid},
		{name: "grace period without expiry: at its end", setup: live(validUntil(graceEnd)),
			token: valid, now: graceEnd, want: CodeExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := NewIndex()
			tt.setup(ix)
			now := tt.now
			if now.IsZero() {
				now = fixtureNow
			}
			e, code := ix.Verify(tt.token, now)
			if code != tt.want {
				t.Fatalf("Verify = %v, want %v", code, tt.want)
			}
			if (e != nil) != (code == CodeValid) {
				t.Fatalf("Verify returned entry %v with code %v; want an entry exactly when VALID", e != nil, code)
			}
		})
	}
}

// TestVerifyIdentity checks that a valid token comes back with the identity
// of its record and the key it belongs to.
func TestVerifyIdentity(t *testing.T) {
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "identity")
	expiry := fixtureNow.Add(time.Hour)

	t.Run("identity Key", func(t *testing.T) {
		ix := NewIndex()
		ix.SetKey(key)
		ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
			s.ExpiresAt = metaTime(expiry)
			s.Audiences = []string{"billing"}
		}))
		e, code := ix.Verify(tok, fixtureNow)
		if code != CodeValid {
			t.Fatalf("Verify = %v, want VALID", code)
		}
		want := identity{
			Username:  "apikey:team-payments:billing-export",
			UID:       fixtureKeyUID, // the controller writes the ApiKey's uid for identity Key
			Groups:    []string{"apikeys", "apikeys:team-payments"},
			Scopes:    []string{"orders:read", "invoices:*"},
			Audiences: []string{"billing"},
			ExpiresAt: expiry,
			Namespace: fixtureNamespace,
			Name:      fixtureName,
			Hint:      token.Hint(tok),
		}
		assertIdentity(t, e, &want)
		if e.Hint != tok[:7]+"…" {
			t.Errorf("Hint = %q, want the prefix and 4 body characters", e.Hint)
		}
		if h := e.forwardHeaders(); !slices.Equal(h[1], []string{"apikeys,apikeys:team-payments"}) ||
			!slices.Equal(h[2], []string{"orders:read invoices:*"}) {
			t.Errorf("header values = %q, %q", h[1], h[2])
		}
	})

	t.Run("identity Owner", func(t *testing.T) {
		ix := NewIndex()
		ix.SetKey(key)
		ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
			s.Username = "alice@example.com"
			s.UID = "alice-uid"
			s.Groups = []string{"developers", "payments-team"}
			s.Scopes = nil
		}))
		e, code := ix.Verify(tok, fixtureNow)
		if code != CodeValid {
			t.Fatalf("Verify = %v, want VALID", code)
		}
		assertIdentity(t, e, &identity{
			Username:  "alice@example.com",
			UID:       "alice-uid",
			Groups:    []string{"developers", "payments-team"},
			Namespace: fixtureNamespace,
			Name:      fixtureName,
			Hint:      token.Hint(tok),
		})
	})

	// An owner without a uid (a static token user, say) authenticates
	// without one: the ApiKey's uid is not the user's.
	t.Run("identity Owner without a uid", func(t *testing.T) {
		ix := NewIndex()
		ix.SetKey(key)
		ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
			s.Username = "alice@example.com"
			s.UID = ""
			s.Groups = []string{"developers"}
		}))
		e, code := ix.Verify(tok, fixtureNow)
		if code != CodeValid {
			t.Fatalf("Verify = %v, want VALID", code)
		}
		if e.UID != "" {
			t.Errorf("UID = %q, want none: the record names no uid", e.UID)
		}
		if e.key.uid != fixtureKeyUID {
			t.Errorf("the entry's key is %q, want the ApiKey's %q", e.key.uid, fixtureKeyUID)
		}
	})
}

// identity is what callers read of an entry, comparable and printable.
type identity struct {
	Username, UID             string
	Groups, Scopes, Audiences []string
	ExpiresAt                 time.Time
	Suspended                 bool
	Namespace, Name, Hint     string
}

func identityOf(e *Entry) identity {
	return identity{
		Username: e.Username, UID: e.UID, Groups: e.Groups(), Scopes: e.Scopes(), Audiences: e.Audiences(),
		ExpiresAt: e.ExpiresAt(), Suspended: e.Suspended, Namespace: e.Namespace(), Name: e.Name, Hint: e.Hint,
	}
}

func assertIdentity(t *testing.T, e *Entry, want *identity) {
	t.Helper()
	got := identityOf(e)
	if got.Username != want.Username || got.UID != want.UID || got.Namespace != want.Namespace ||
		got.Name != want.Name || got.Hint != want.Hint || got.Suspended != want.Suspended ||
		!got.ExpiresAt.Equal(want.ExpiresAt) ||
		!slices.Equal(got.Groups, want.Groups) || !slices.Equal(got.Scopes, want.Scopes) || !slices.Equal(got.Audiences, want.Audiences) {
		t.Errorf("entry identity:\n got %+v\nwant %+v", got, *want)
	}
}

func TestAuthorize(t *testing.T) {
	entry := func(scopes, audiences []string) *Entry {
		return &Entry{group: &group{scopes: scopes, audiences: audiences}}
	}
	keyScopes := []string{"orders:read", "invoices:*"}

	tests := []struct {
		name     string
		entry    *Entry
		scopes   []string
		audience string
		want     Code
	}{
		{name: "nothing required", entry: entry(keyScopes, nil), want: CodeValid},
		{name: "nothing required of a key without scopes", entry: entry(nil, nil), want: CodeValid},
		{name: "granted scope", entry: entry(keyScopes, nil), scopes: []string{"orders:read"}, want: CodeValid},
		{name: "missing scope", entry: entry(keyScopes, nil), scopes: []string{"orders:write"}, want: CodeInsufficientScope},
		{name: "all required: one missing", entry: entry(keyScopes, nil), scopes: []string{"orders:read", "orders:write"},
			want: CodeInsufficientScope},
		{name: "all required: all granted", entry: entry(keyScopes, nil), scopes: []string{"orders:read", "invoices:read", "orders:read"},
			want: CodeValid},
		{name: "key without scopes", entry: entry(nil, nil), scopes: []string{"orders:read"}, want: CodeInsufficientScope},
		{name: "scopes compare exactly", entry: entry(keyScopes, nil), scopes: []string{"Orders:read"}, want: CodeInsufficientScope},
		{name: "scope is not a prefix match", entry: entry(keyScopes, nil), scopes: []string{"orders:readwrite"}, want: CodeInsufficientScope},

		{name: "x:* grants x:read", entry: entry(keyScopes, nil), scopes: []string{"invoices:read"}, want: CodeValid},
		{name: "x:* grants deeper scopes", entry: entry(keyScopes, nil), scopes: []string{"invoices:read:pdf"}, want: CodeValid},
		{name: "x:* grants x:*", entry: entry(keyScopes, nil), scopes: []string{"invoices:*"}, want: CodeValid},
		{name: "x:* does not grant x: itself", entry: entry(keyScopes, nil), scopes: []string{"invoices:"}, want: CodeInsufficientScope},
		{name: "x:* does not grant x", entry: entry(keyScopes, nil), scopes: []string{"invoices"}, want: CodeInsufficientScope},
		{name: "x:* does not grant xy:read", entry: entry(keyScopes, nil), scopes: []string{"invoicesx:read"}, want: CodeInsufficientScope},
		{name: "x:* does not grant y:x:read", entry: entry(keyScopes, nil), scopes: []string{"orders:invoices:read"},
			want: CodeInsufficientScope},
		{name: "x:y:* grants x:y:z but not x:z", entry: entry([]string{"a:b:*"}, nil), scopes: []string{"a:b:c"}, want: CodeValid},
		{name: "x:y:* does not grant x:z", entry: entry([]string{"a:b:*"}, nil), scopes: []string{"a:c"}, want: CodeInsufficientScope},
		{name: "x* without ':' is no wildcard", entry: entry([]string{"invoices*"}, nil), scopes: []string{"invoicesx"},
			want: CodeInsufficientScope},
		{name: "x* without ':' grants itself", entry: entry([]string{"invoices*"}, nil), scopes: []string{"invoices*"}, want: CodeValid},
		{name: "* grants everything", entry: entry([]string{"*"}, nil), scopes: []string{"orders:write", "admin", "a:b:c", "x:*"},
			want: CodeValid},
		{name: "* among other scopes", entry: entry([]string{"orders:read", "*"}, nil), scopes: []string{"admin"}, want: CodeValid},

		{name: "key without audiences, none asked", entry: entry(keyScopes, nil), want: CodeValid},
		{name: "key without audiences, any asked", entry: entry(keyScopes, nil), audience: "https://anything.example", want: CodeValid},
		{name: "key with audiences, listed one asked", entry: entry(keyScopes, []string{"api.example.com", "billing"}),
			audience: "billing", want: CodeValid},
		{name: "key with audiences, none asked", entry: entry(keyScopes, []string{"api.example.com", "billing"}), want: CodeAudienceMismatch},
		{name: "key with audiences, other asked", entry: entry(keyScopes, []string{"api.example.com", "billing"}),
			audience: "shipping", want: CodeAudienceMismatch},
		{name: "key with audiences, compared exactly", entry: entry(keyScopes, []string{"billing"}),
			audience: "Billing", want: CodeAudienceMismatch},
		{name: "key with audiences, listed one asked and scopes granted", entry: entry(keyScopes, []string{"billing"}),
			audience: "billing", scopes: []string{"invoices:read"}, want: CodeValid},
		{name: "key with audiences, listed one asked but scope missing", entry: entry(keyScopes, []string{"billing"}),
			audience: "billing", scopes: []string{"orders:write"}, want: CodeInsufficientScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.entry.Authorize(tt.scopes, tt.audience); got != tt.want {
				t.Errorf("Authorize(%q, %q) = %v, want %v", tt.scopes, tt.audience, got, tt.want)
			}
		})
	}
}

func TestCodeString(t *testing.T) {
	want := []string{"VALID", "MALFORMED", "NOT_FOUND", "EXPIRED", "SUSPENDED", "INSUFFICIENT_SCOPE", "AUDIENCE_MISMATCH"}
	for c := Code(0); c < numCodes; c++ {
		if c.String() != want[c] {
			t.Errorf("Code(%d) = %q, want %q", c, c, want[c])
		}
	}
	if got := numCodes.String(); got != "UNKNOWN" {
		t.Errorf("Code(%d) = %q, want UNKNOWN", numCodes, got)
	}
}

// flipLast changes the last character of tok to another base62 character.
func flipLast(tok string) string {
	return tok[:len(tok)-1] + flipChar(tok[len(tok)-1])
}

func flipChar(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}
