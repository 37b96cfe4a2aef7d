package authserver

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

func TestIndexSynced(t *testing.T) {
	ix := NewIndex()
	if ix.Synced() {
		t.Fatal("a new index reports synced")
	}
	if ix.Len() != 0 {
		t.Fatalf("a new index has Len %d", ix.Len())
	}
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	ix.SetKey(key)
	ix.SetRecord(issuedRecord(stableToken(apikeysv1alpha1.DefaultPrefix, "synced"), key))
	if ix.Synced() {
		t.Fatal("the index reports synced after events but before MarkSynced")
	}
	before := time.Now()
	ix.MarkSynced()
	if !ix.Synced() {
		t.Fatal("the index does not report synced after MarkSynced")
	}
	if ix.LastChange().Before(before) {
		t.Errorf("LastChange %v is before MarkSynced at %v", ix.LastChange(), before)
	}
	synced := ix.LastChange()
	ix.DeleteRecord("no-such-record")
	if !ix.LastChange().Equal(synced) {
		t.Errorf("deleting an unknown record moved LastChange")
	}
}

func TestIndexLen(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	ix.SetKey(key)
	names := make([]string, 0, 5)
	for i := range 5 {
		rec := issuedRecord(stableToken(apikeysv1alpha1.DefaultPrefix, fmt.Sprint("len-", i)), key)
		ix.SetRecord(rec)
		ix.SetRecord(rec) // an informer resync delivers the same record again
		names = append(names, rec.Name)
		if ix.Len() != i+1 {
			t.Fatalf("after %d records Len = %d", i+1, ix.Len())
		}
	}
	ix.SetKey(informerKey(fixtureNamespace, "other", "other-uid"))
	if ix.Len() != 5 {
		t.Fatalf("Len counts keys: %d", ix.Len())
	}
	for i, name := range names {
		ix.DeleteRecord(name)
		ix.DeleteRecord(name)
		if want := len(names) - i - 1; ix.Len() != want {
			t.Fatalf("after deleting %d records Len = %d, want %d", i+1, ix.Len(), want)
		}
	}
}

func TestIndexDeleteRecord(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	kept := stableToken(apikeysv1alpha1.DefaultPrefix, "kept")
	removed := stableToken(apikeysv1alpha1.DefaultPrefix, "removed")
	ix.SetKey(key)
	ix.SetRecord(issuedRecord(kept, key))
	ix.SetRecord(issuedRecord(removed, key))
	assertCode(t, ix, removed, CodeValid)

	ix.DeleteRecord(issuedRecord(removed, key).Name)
	assertCode(t, ix, removed, CodeNotFound)
	assertCode(t, ix, kept, CodeValid)
	if ix.Len() != 1 {
		t.Errorf("Len = %d after deleting one of two records", ix.Len())
	}
}

// TestIndexRecordBeingDeleted covers a record whose deletion has started
// but waits on a finalizer (another tool's): its token is revoked at once,
// whether the deletion arrives as an update of the same generation, as a
// new one, or in a listing, and through the informer's trim.
func TestIndexRecordBeingDeleted(t *testing.T) {
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "deleting")
	rec := issuedRecord(tok, key)
	rec.Generation, rec.ResourceVersion = 1, "10"
	deleting := rec.DeepCopy()
	deleting.ResourceVersion = "11"
	deleting.DeletionTimestamp = metaTime(fixtureNow)
	deleting.Finalizers = []string{"example.com/backup"}
	trimmed, err := trimRecord(deleting)
	if err != nil {
		t.Fatal(err)
	}
	for what, deliver := range map[string]func(ix *Index){
		"an update":        func(ix *Index) { ix.UpdateRecord(trimmed.(*apikeysv1alpha1.ApiKeyRecord)) },
		"a new generation": func(ix *Index) { d := deleting.DeepCopy(); d.Generation = 2; ix.UpdateRecord(d) },
		"a set":            func(ix *Index) { ix.SetRecord(deleting) },
		"a listing":        func(ix *Index) { ix.ReplaceRecords([]*apikeysv1alpha1.ApiKeyRecord{deleting}) },
	} {
		t.Run(what, func(t *testing.T) {
			ix := NewIndex()
			ix.SetKey(key)
			ix.SetRecord(rec)
			assertCode(t, ix, tok, CodeValid)
			deliver(ix)
			assertCode(t, ix, tok, CodeNotFound)
		})
	}
}

// TestIndexRecordNewHash covers a record whose name stays while its hash
// changes: the old token must stop working, not linger under its hash.
func TestIndexRecordNewHash(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	oldTok := stableToken(apikeysv1alpha1.DefaultPrefix, "old")
	newTok := stableToken(apikeysv1alpha1.DefaultPrefix, "new")
	ix.SetKey(key)
	rec := issuedRecord(oldTok, key)
	ix.SetRecord(rec)

	replaced := issuedRecord(newTok, key)
	replaced.Name = rec.Name
	ix.SetRecord(replaced)

	assertCode(t, ix, oldTok, CodeNotFound)
	assertCode(t, ix, newTok, CodeValid)
	if ix.Len() != 1 {
		t.Errorf("Len = %d, want 1", ix.Len())
	}
	ix.DeleteRecord(rec.Name)
	assertCode(t, ix, newTok, CodeNotFound)
	if ix.Len() != 0 {
		t.Errorf("Len = %d after delete, want 0", ix.Len())
	}
}

// TestIndexRecordEdits checks that scope, audience, suspension and expiry
// edits take effect without a new token, and that an entry already handed
// to a request does not change under it.
func TestIndexRecordEdits(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "edits")
	ix.SetKey(key)
	ix.SetRecord(issuedRecord(tok, key))
	before, _ := ix.Verify(tok, fixtureNow)

	ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
		s.Scopes = []string{"orders:write"}
		s.Audiences = []string{"billing"}
	}))
	after, code := ix.Verify(tok, fixtureNow)
	if code != CodeValid {
		t.Fatalf("Verify after a scope edit = %v", code)
	}
	if got := after.Authorize([]string{"orders:write"}, "billing"); got != CodeValid {
		t.Errorf("new scope and audience: %v", got)
	}
	if got := after.Authorize([]string{"orders:read"}, "billing"); got != CodeInsufficientScope {
		t.Errorf("removed scope: %v", got)
	}
	if got := after.Authorize(nil, ""); got != CodeAudienceMismatch {
		t.Errorf("new audience restriction: %v", got)
	}
	if !slices.Equal(before.Scopes(), []string{"orders:read", "invoices:*"}) || before.Audiences() != nil {
		t.Errorf("an entry returned earlier changed: scopes %q, audiences %q", before.Scopes(), before.Audiences())
	}

	ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Suspended = true }))
	assertCode(t, ix, tok, CodeSuspended)
	ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.ExpiresAt = metaTime(fixtureNow) }))
	assertCode(t, ix, tok, CodeExpired)
	ix.SetRecord(issuedRecord(tok, key))
	assertCode(t, ix, tok, CodeValid)
}

// TestIndexRotation covers a key with two live tokens during a grace
// period: both work until the old one's validUntil, and deleting the key
// stops both at once.
func TestIndexRotation(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	oldTok := stableToken(apikeysv1alpha1.DefaultPrefix, "rotated-out")
	newTok := stableToken(apikeysv1alpha1.DefaultPrefix, "rotated-in")
	graceEnd := fixtureNow.Add(time.Minute)
	ix.SetKey(key)
	ix.SetRecord(issuedRecord(oldTok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.ValidUntil = metaTime(graceEnd) }))
	ix.SetRecord(issuedRecord(newTok, key))

	assertCode(t, ix, oldTok, CodeValid)
	assertCode(t, ix, newTok, CodeValid)
	if _, code := ix.Verify(oldTok, graceEnd); code != CodeExpired {
		t.Errorf("old token at the end of its grace period: %v", code)
	}
	if _, code := ix.Verify(newTok, graceEnd); code != CodeValid {
		t.Errorf("new token at the end of the grace period: %v", code)
	}
	ix.DeleteKey(key.UID)
	assertCode(t, ix, oldTok, CodeNotFound)
	assertCode(t, ix, newTok, CodeNotFound)
}

func TestIndexIgnoresBadHash(t *testing.T) {
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "bad-hash")
	for _, hash := range []string{"", "sha256:", "md5:0123", token.Hash(tok)[:70], "SHA256:" + token.Hash(tok)[7:],
		"sha256:" + fmt.Sprintf("%X", token.Sum(tok))} {
		ix := NewIndex()
		ix.SetKey(key)
		ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.TokenHash = hash }))
		if ix.Len() != 0 {
			t.Errorf("a record with hash %q was indexed", hash)
		}
		assertCode(t, ix, tok, CodeNotFound)
	}
}

// TestIndexConcurrentUse runs requests against informer updates; run with
// -race to check the index's locking.
func TestIndexConcurrentUse(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "concurrent")
	ix.SetKey(key)
	ix.SetRecord(issuedRecord(tok, key))
	ix.MarkSynced()

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 2000 {
				if e, code := ix.Verify(tok, fixtureNow); code == CodeValid {
					e.Authorize([]string{"orders:read"}, "")
					e.markUsed(fixtureNow)
				}
				_ = ix.Len()
			}
		})
	}
	wg.Go(func() {
		for i := range 500 {
			other := stableToken(apikeysv1alpha1.DefaultPrefix, fmt.Sprint("churn-", i%7))
			rec := issuedRecord(other, key)
			ix.SetRecord(rec)
			ix.SetKey(key)
			ix.DeleteRecord(rec.Name)
			_ = ix.unflushedUses()
		}
	})
	wg.Wait()
	assertCode(t, ix, tok, CodeValid)
	if ix.Len() != 1 {
		t.Errorf("Len = %d, want 1", ix.Len())
	}
}

// TestIndexUsage checks that each token has its own last-used tracker,
// kept across updates of its record (the flusher's own status patches
// arrive as updates) and forgotten with the record.
func TestIndexUsage(t *testing.T) { //nolint:gocyclo // a flat sequence of checks, each one case
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	a, b := stableToken(apikeysv1alpha1.DefaultPrefix, "usage-a"), stableToken(apikeysv1alpha1.DefaultPrefix, "usage-b")
	recA, recB := issuedRecord(a, key), issuedRecord(b, key)
	ix.SetRecord(recA) // the record may arrive before its key
	ix.SetKey(key)
	ix.SetRecord(recB)
	if u := ix.unflushedUses(); len(u) != 0 {
		t.Fatalf("unused tokens have uses to flush: %+v", u)
	}

	ea, _ := ix.Verify(a, fixtureNow)
	eb, _ := ix.Verify(b, fixtureNow)
	if ea == nil || eb == nil || ea.record == nil || ea.record == eb.record {
		t.Fatal("the tokens of one key share a usage tracker, or have none")
	}
	ea.markUsed(fixtureNow)
	ea.markUsed(fixtureNow.Add(-time.Hour)) // an older time never moves it back
	if got := ea.record.lastUsed.Load(); got != fixtureNow.Unix() {
		t.Errorf("lastUsed = %d, want %d", got, fixtureNow.Unix())
	}
	if got := eb.record.lastUsed.Load(); got != 0 {
		t.Errorf("using token a marked token b used at %d", got)
	}

	ix.SetRecord(issuedRecord(a, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Scopes = []string{"orders:write"} }))
	u := ix.unflushedUses()
	if len(u) != 1 || u[0].name != recA.Name || u[0].state.lastUsed.Load() != fixtureNow.Unix() {
		t.Fatalf("after an update of the used token's record, uses to flush = %+v", u)
	}
	u[0].state.flushed.Store(fixtureNow.Unix())
	if u := ix.unflushedUses(); len(u) != 0 {
		t.Errorf("a flushed use is flushed again: %+v", u)
	}
	ea.markUsed(fixtureNow.Add(time.Second))
	if u := ix.unflushedUses(); len(u) != 1 || u[0].name != recA.Name {
		t.Errorf("a later use is not flushed: %+v", u)
	}

	ix.DeleteRecord(recA.Name)
	if u := ix.unflushedUses(); len(u) != 0 {
		t.Errorf("a deleted record still has uses to flush: %+v", u)
	}
	ix.SetRecord(recA)
	if ea2, _ := ix.Verify(a, fixtureNow); ea2.record == ea.record || ea2.record.lastUsed.Load() != 0 {
		t.Error("a record added again inherits the usage of its deleted namesake")
	}
}

// TestIndexRefusesCommaGroups: a group name holding a comma would be split
// by every reader of X-Auth-Request-Groups, so such a record is not indexed,
// and an indexed record that gains one stops working.
func TestIndexRefusesCommaGroups(t *testing.T) {
	for _, groups := range [][]string{{"developers,system:masters"}, {"apikeys", ","}, {"apikeys", "trailing,"}} {
		ix := NewIndex()
		key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
		tok := stableToken(apikeysv1alpha1.DefaultPrefix, "comma")
		ix.SetKey(key)
		ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Groups = groups }))
		if ix.Len() != 0 {
			t.Errorf("a record with groups %q was indexed", groups)
		}
		assertCode(t, ix, tok, CodeNotFound)

		ix.SetRecord(issuedRecord(tok, key))
		assertCode(t, ix, tok, CodeValid)
		ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Groups = groups }))
		assertCode(t, ix, tok, CodeNotFound)
		if ix.Len() != 0 {
			t.Errorf("groups %q: the earlier version of the record is still indexed", groups)
		}
	}
}

func assertCode(t *testing.T, ix *Index, tok string, want Code) {
	t.Helper()
	if _, code := ix.Verify(tok, fixtureNow); code != want {
		t.Errorf("Verify(%s) = %v, want %v", token.Hint(tok), code, want)
	}
}

// TestIndexRefusesHeaderUnsafeIdentities checks that a token whose
// username or a group would reach a backend changed, in a forward-auth
// header, is not indexed: "alice " arrives as "alice" (proxies trim), a
// newline as a space, and under HTTP/2 a control character drops the
// header. The names come from the cluster's authenticator (an OIDC claim),
// which may allow them; TokenReview would carry them exactly, but one index
// serves every endpoint.
func TestIndexRefusesHeaderUnsafeIdentities(t *testing.T) {
	for what, edit := range map[string]func(*apikeysv1alpha1.ApiKeyRecordSpec){
		"trailing space":     func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Username = "alice " },
		"leading tab":        func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Username = "\talice" },
		"newline":            func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Username = "alice\nX-Auth-Request-User: admin" },
		"NUL":                func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Username = "alice\x00" },
		"not UTF-8":          func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Username = "alic\xe9" },
		"group with a space": func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Groups = []string{"developers", " system:masters"} },
		"group with DEL":     func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Groups = []string{"admins\x7f"} },
	} {
		t.Run(what, func(t *testing.T) {
			ix := NewIndex()
			key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
			tok := stableToken(apikeysv1alpha1.DefaultPrefix, "unsafe")
			ix.SetKey(key)
			ix.SetRecord(issuedRecord(tok, key))
			assertCode(t, ix, tok, CodeValid)
			ix.SetRecord(issuedRecord(tok, key, edit))
			assertCode(t, ix, tok, CodeNotFound)
		})
	}
	// Names that only look unusual stay.
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "unusual")
	ix.SetKey(key)
	ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
		s.Username, s.Groups = "Zoë Müller (ops) <zoe@example.com>", []string{"oidc:team a", "ünïcode"}
	}))
	assertCode(t, ix, tok, CodeValid)
}

// TestIndexSharesGroups checks that tokens carrying the same namespace,
// groups, scopes and audiences hold one copy of them, and that the copy
// goes with the last token using it.
func TestIndexSharesGroups(t *testing.T) {
	ix := NewIndex()
	a := informerKey(fixtureNamespace, "a", "uid-a")
	b := informerKey(fixtureNamespace, "b", "uid-b")
	tokA, tokB := stableToken(apikeysv1alpha1.DefaultPrefix, "share-a"), stableToken(apikeysv1alpha1.DefaultPrefix, "share-b")
	ix.SetKey(a)
	ix.SetKey(b)
	recA, recB := issuedRecord(tokA, a), issuedRecord(tokB, b)
	ix.SetRecord(recA)
	ix.SetRecord(recB)
	ea, _ := ix.Verify(tokA, fixtureNow)
	eb, _ := ix.Verify(tokB, fixtureNow)
	if ea.group != eb.group || &ea.Groups()[0] != &eb.Groups()[0] || &ea.Scopes()[0] != &eb.Scopes()[0] {
		t.Error("two tokens with the same groups and scopes hold copies of them")
	}
	if &ea.Groups()[0] == &recA.Spec.Groups[0] {
		t.Error("the entry holds the record's own slice")
	}
	if cap(ea.Groups()) != len(ea.Groups()) || cap(ea.Scopes()) != len(ea.Scopes()) {
		t.Error("a shared slice has room to append into")
	}
	headers := ea.forwardHeaders()
	for i, want := range []string{ea.Username, "apikeys,apikeys:team-payments", "orders:read invoices:*", "a", fixtureNamespace} {
		assertHeader(t, forwardHeaderNames[i], headers[i], want)
	}
	if &headers[0][0] != &ea.Username || &headers[3][0] != &ea.Name {
		t.Error("the user and name header values are copies of the entry's strings")
	}
	if len(ix.groups) != 1 {
		t.Errorf("%d groups held, want 1", len(ix.groups))
	}

	ix.SetRecord(issuedRecord(tokB, b, func(s *apikeysv1alpha1.ApiKeyRecordSpec) { s.Scopes = []string{"orders:write"} }))
	if len(ix.groups) != 2 {
		t.Errorf("after one token's scopes changed, %d groups held, want 2", len(ix.groups))
	}
	ix.DeleteRecord(recA.Name)
	ix.DeleteRecord(recB.Name)
	if len(ix.groups) != 0 {
		t.Errorf("%d groups held after every token went", len(ix.groups))
	}
}

// TestEntrySize holds an entry to Go's 144-byte size class, the index's
// largest cost per key: a field that pushes it into the next class (160
// bytes) should be a choice, not an accident.
func TestEntrySize(t *testing.T) {
	if size := unsafe.Sizeof(Entry{}); size > 144 {
		t.Errorf("Entry is %d bytes, more than the 144-byte size class", size)
	}
}

// TestIndexExpiry checks the expiry an entry keeps, as Unix nanoseconds:
// the earlier of expiresAt and validUntil, and instants an int64 of
// nanoseconds cannot hold still on the side of now they were.
func TestIndexExpiry(t *testing.T) {
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "expiry")
	soon, later := fixtureNow.Add(time.Minute), fixtureNow.Add(time.Hour)
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name                  string
		expiresAt, validUntil *time.Time
		want                  Code
		wantAt                time.Time
	}{
		{name: "never", want: CodeValid},
		{name: "expiresAt", expiresAt: &later, want: CodeValid, wantAt: later},
		{name: "validUntil", validUntil: &soon, want: CodeValid, wantAt: soon},
		{name: "validUntil first", expiresAt: &later, validUntil: &soon, want: CodeValid, wantAt: soon},
		{name: "expiresAt first", expiresAt: &soon, validUntil: &later, want: CodeValid, wantAt: soon},
		{name: "at now", expiresAt: &fixtureNow, want: CodeExpired, wantAt: fixtureNow},
		{name: "a nanosecond after now", expiresAt: new(fixtureNow.Add(time.Nanosecond)), want: CodeValid,
			wantAt: fixtureNow.Add(time.Nanosecond)},
		{name: "the Unix epoch", expiresAt: new(time.Unix(0, 0)), want: CodeExpired, wantAt: time.Unix(0, 1)},
		{name: "before 1678", expiresAt: new(time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)), want: CodeExpired,
			wantAt: time.Unix(0, 1)},
		{name: "after 2262", expiresAt: &far, want: CodeValid, wantAt: time.Unix(0, math.MaxInt64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := NewIndex()
			ix.SetKey(key)
			ix.SetRecord(issuedRecord(tok, key, func(s *apikeysv1alpha1.ApiKeyRecordSpec) {
				s.ExpiresAt, s.ValidUntil = nil, nil
				if tt.expiresAt != nil {
					s.ExpiresAt = metaTime(*tt.expiresAt)
				}
				if tt.validUntil != nil {
					s.ValidUntil = metaTime(*tt.validUntil)
				}
			}))
			assertCode(t, ix, tok, tt.want)
			e := ix.entries.get(new(token.Sum(tok)))
			if got := e.ExpiresAt(); !got.Equal(tt.wantAt) || got.IsZero() != tt.wantAt.IsZero() {
				t.Errorf("ExpiresAt = %v, want %v", got, tt.wantAt)
			}
		})
	}
}

// assertHeader checks a forward-auth header value: one value, and no room
// for Header.Add to write into the entry.
func assertHeader(t *testing.T, what string, got []string, want string) {
	t.Helper()
	if len(got) != 1 || cap(got) != 1 || got[0] != want {
		t.Errorf("%s header = %q (cap %d), want %q", what, got, cap(got), want)
	}
}

// TestIndexForgetsKeys checks that the index holds a key's state only while
// the ApiKey exists or a record points at it.
func TestIndexForgetsKeys(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "forget")
	rec := issuedRecord(tok, key)

	ix.SetRecord(rec) // a record whose key is never seen
	ix.DeleteRecord(rec.Name)
	if len(ix.keys) != 0 {
		t.Errorf("a record that went left %d key states", len(ix.keys))
	}

	ix.SetKey(key)
	ix.SetRecord(rec)
	ix.DeleteKey(key.UID)
	assertCode(t, ix, tok, CodeNotFound)
	ix.SetRecord(rec) // the record, updated before the controller deletes it
	assertCode(t, ix, tok, CodeNotFound)
	ix.DeleteRecord(rec.Name)
	if len(ix.keys) != 0 {
		t.Errorf("a deleted key whose records went left %d key states", len(ix.keys))
	}
	ix.SetKey(key)
	ix.DeleteKey(key.UID)
	if len(ix.keys) != 0 {
		t.Errorf("a deleted key without records left %d key states", len(ix.keys))
	}
}

// TestIndexNamespaceDeletion checks that every token of a namespace being
// deleted is refused at once, before its ApiKeys are, and only those.
func TestIndexNamespaceDeletion(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	other := informerKey("other-team", fixtureName, "other-uid")
	tok, otherTok := stableToken(apikeysv1alpha1.DefaultPrefix, "ns"), stableToken(apikeysv1alpha1.DefaultPrefix, "other-ns")
	for _, k := range []*apikeysv1alpha1.ApiKey{key, other} {
		ix.SetKey(k)
	}
	ix.SetRecord(issuedRecord(tok, key))
	ix.SetRecord(issuedRecord(otherTok, other))

	ix.SetNamespace(fixtureNamespace, false) // a live namespace's update
	if ix.terminating.Load() != nil {
		t.Fatalf("a live namespace made a terminating set")
	}
	before := ix.LastChange()
	ix.SetNamespace(fixtureNamespace, true)
	assertCode(t, ix, tok, CodeNotFound)
	assertCode(t, ix, otherTok, CodeValid)
	if !ix.LastChange().After(before) {
		t.Errorf("a namespace's deletion did not move LastChange")
	}

	ix.SetNamespace(fixtureNamespace, false) // gone, and made again by the same name
	assertCode(t, ix, tok, CodeValid)
	if ix.terminating.Load() != nil {
		t.Errorf("no namespace is being deleted, yet the set is kept")
	}

	ix.ReplaceNamespaces([]string{"other-team"}) // a relist
	assertCode(t, ix, tok, CodeValid)
	assertCode(t, ix, otherTok, CodeNotFound)
	ix.ReplaceNamespaces(nil)
	assertCode(t, ix, otherTok, CodeValid)
}

// TestIndexReplace checks that a new listing is the whole truth: records
// and keys it does not hold are gone.
func TestIndexReplace(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	other := informerKey(fixtureNamespace, "other", "other-uid")
	kept, dropped := stableToken(apikeysv1alpha1.DefaultPrefix, "kept"), stableToken(apikeysv1alpha1.DefaultPrefix, "dropped")
	orphan := stableToken(apikeysv1alpha1.DefaultPrefix, "orphan")
	ix.ReplaceKeys([]*apikeysv1alpha1.ApiKey{key, other})
	ix.ReplaceRecords([]*apikeysv1alpha1.ApiKeyRecord{issuedRecord(kept, key), issuedRecord(dropped, key), issuedRecord(orphan, other)})
	for _, tok := range []string{kept, dropped, orphan} {
		assertCode(t, ix, tok, CodeValid)
	}

	ix.ReplaceRecords([]*apikeysv1alpha1.ApiKeyRecord{issuedRecord(kept, key), issuedRecord(orphan, other)})
	ix.ReplaceKeys([]*apikeysv1alpha1.ApiKey{key})
	assertCode(t, ix, kept, CodeValid)
	assertCode(t, ix, dropped, CodeNotFound)
	assertCode(t, ix, orphan, CodeNotFound) // its key is gone
	if ix.Len() != 2 {
		t.Errorf("Len = %d, want 2", ix.Len())
	}
	ix.ReplaceRecords(nil)
	if ix.Len() != 0 || len(ix.groups) != 0 || len(ix.keys) != 1 {
		t.Errorf("after an empty listing: %d tokens, %d groups, %d keys; want 0, 0, 1", ix.Len(), len(ix.groups), len(ix.keys))
	}
}

// TestIndexUpdateRecord checks that a status write (same generation) keeps
// the entry and notes what the flusher needs, and that a spec change
// replaces the entry but keeps the token's usage.
func TestIndexUpdateRecord(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "update")
	rec := issuedRecord(tok, key)
	rec.Generation, rec.ResourceVersion = 1, "10"
	ix.SetKey(key)
	ix.SetRecord(rec)
	before, _ := ix.Verify(tok, fixtureNow)
	before.markUsed(fixtureNow)

	written := rec.DeepCopy()
	written.ResourceVersion = "11"
	written.Status.LastUsedAt = metaTime(fixtureNow.Add(-time.Minute))
	ix.UpdateRecord(written)
	after, _ := ix.Verify(tok, fixtureNow)
	if after != before {
		t.Error("a status write replaced the entry")
	}
	u := ix.unflushedUses()
	if len(u) != 1 || u[0].resourceVersion != "11" || u[0].usedAt != fixtureNow.Add(-time.Minute).Unix() || u[0].name != rec.Name {
		t.Fatalf("uses to flush = %+v", u)
	}

	edited := written.DeepCopy()
	edited.Generation, edited.ResourceVersion = 2, "12"
	edited.Spec.Scopes = []string{"orders:write"}
	ix.UpdateRecord(edited)
	after, _ = ix.Verify(tok, fixtureNow)
	if after == before || after.Authorize([]string{"orders:write"}, "") != CodeValid {
		t.Error("a spec change did not replace the entry")
	}
	if after.record != before.record || after.record.lastUsed.Load() != fixtureNow.Unix() {
		t.Error("a spec change lost the token's usage")
	}
}

// TestIndexRecordNames covers records not named after their hash (only
// hand-made ones are): they index, go by their own name, and a name holds
// only the hash it was last given.
func TestIndexRecordNames(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	ix.SetKey(key)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "named")
	named := issuedRecord(tok, key)
	canonical := named.Name
	named.Name = "record-billing"
	ix.SetRecord(named)
	assertCode(t, ix, tok, CodeValid)
	ix.DeleteRecord(canonical)
	assertCode(t, ix, tok, CodeValid) // that name holds nothing
	if u := ix.unflushedUses(); len(u) != 0 {
		t.Fatalf("unused token has uses: %+v", u)
	}
	e, _ := ix.Verify(tok, fixtureNow)
	e.markUsed(fixtureNow)
	if u := ix.unflushedUses(); len(u) != 1 || u[0].name != "record-billing" {
		t.Errorf("uses to flush = %+v, want the record's own name", u)
	}

	// The canonically named record of the same token takes its entry over.
	ix.SetRecord(issuedRecord(tok, key))
	ix.DeleteRecord("record-billing")
	assertCode(t, ix, tok, CodeValid)
	ix.DeleteRecord(canonical)
	assertCode(t, ix, tok, CodeNotFound)
	if ix.Len() != 0 || len(ix.otherNames) != 0 || len(ix.otherHashes) != 0 {
		t.Errorf("left %d tokens, %d names", ix.Len(), len(ix.otherNames)+len(ix.otherHashes))
	}

}

// TestIndexMemoryPerKey pins what a key costs the index, the auth server's
// only copy of its records: the target (docs/benchmarks.md) allows a replica < 1 KiB per key.
func TestIndexMemoryPerKey(t *testing.T) {
	const n = 20000
	before := heapInUse()
	ix := NewIndex()
	// What the index keeps of the objects it is handed counts; the rest of
	// them goes once fill returns.
	fill := func() {
		for i := range n {
			key := informerKey(fmt.Sprint("team-", i%50), fmt.Sprint("service-", i), fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
			rec := issuedRecord(stableToken(apikeysv1alpha1.DefaultPrefix, fmt.Sprint("mem-", i)), key)
			rec.ResourceVersion = fmt.Sprint(1000000 + i)
			ix.SetKey(key)
			ix.SetRecord(rec)
		}
	}
	fill()
	perKey := float64(heapInUse()-before) / n
	runtime.KeepAlive(ix)
	t.Logf("%.0f B per key", perKey)
	if perKey > 700 {
		t.Errorf("the index holds %.0f B per key, want at most 700", perKey)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestIndexSharedHashHead: the index looks a token up by the first 8 bytes
// of its hash, so a record whose hash shares them with another's (by chance,
// or made by hand to) must neither hide the other's token nor answer for
// it, whichever is indexed first and whichever goes first.
func TestIndexSharedHashHead(t *testing.T) {
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "shared-head")
	rec := issuedRecord(tok, key)
	twinSum := token.Sum(tok)
	twinSum[31] ^= 1
	twin := hashedRecord(twinSum, "ak_twin…", key)

	for name, first := range map[string][]*apikeysv1alpha1.ApiKeyRecord{
		"token first": {rec, twin},
		"twin first":  {twin, rec},
	} {
		t.Run(name, func(t *testing.T) {
			ix := NewIndex()
			ix.SetKey(key)
			for _, r := range first {
				ix.SetRecord(r)
			}
			ix.SetRecord(rec) // replacing an entry keeps one entry per hash
			ix.SetRecord(twin)
			if ix.Len() != 2 {
				t.Fatalf("index holds %d tokens, want 2", ix.Len())
			}
			assertCode(t, ix, tok, CodeValid)
			if e := ix.entries.get(&twinSum); e == nil || e.hash != twinSum {
				t.Fatal("the twin record's entry is not found by its hash")
			}

			// Usage reaches the flusher from either place.
			e, _ := ix.Verify(tok, fixtureNow)
			e.markUsed(fixtureNow)
			if u := ix.unflushedUses(); len(u) != 1 || u[0].name != rec.Name {
				t.Errorf("uses to flush = %d, want the token's record", len(u))
			}

			ix.DeleteRecord(twin.Name)
			assertCode(t, ix, tok, CodeValid)
			if ix.Len() != 1 || ix.entries.get(&twinSum) != nil {
				t.Errorf("after the twin's deletion the index holds %d tokens, want 1", ix.Len())
			}

			ix.SetRecord(twin)
			ix.DeleteRecord(rec.Name)
			assertCode(t, ix, tok, CodeNotFound)
			if ix.entries.get(&twinSum) == nil {
				t.Error("deleting the token's record took the twin's entry with it")
			}

			ix.SetRecord(rec)
			ix.ReplaceRecords([]*apikeysv1alpha1.ApiKeyRecord{twin})
			assertCode(t, ix, tok, CodeNotFound)
			if ix.Len() != 1 || ix.entries.get(&twinSum) == nil {
				t.Errorf("after a listing of the twin alone the index holds %d tokens, want the twin", ix.Len())
			}
		})
	}
}

func TestSameHash(t *testing.T) {
	a := token.Sum("a")
	if !sameHash(&a, &a) {
		t.Error("a hash differs from itself")
	}
	for i := range len(a) {
		for _, bit := range []byte{0x01, 0x80} {
			b := a
			b[i] ^= bit
			if sameHash(&a, &b) {
				t.Errorf("hashes differing in byte %d (bit %#x) compare equal", i, bit)
			}
		}
	}
}
