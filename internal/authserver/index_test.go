package authserver

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

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
	ix.SetRecord(issuedRecord(stableToken(token.DefaultPrefix, "synced"), key))
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
		rec := issuedRecord(stableToken(token.DefaultPrefix, fmt.Sprint("len-", i)), key)
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
	kept := stableToken(token.DefaultPrefix, "kept")
	removed := stableToken(token.DefaultPrefix, "removed")
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

// TestIndexRecordNewHash covers a record whose name stays while its hash
// changes: the old token must stop working, not linger under its hash.
func TestIndexRecordNewHash(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	oldTok := stableToken(token.DefaultPrefix, "old")
	newTok := stableToken(token.DefaultPrefix, "new")
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
	tok := stableToken(token.DefaultPrefix, "edits")
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
	if !slices.Equal(before.Scopes, []string{"orders:read", "invoices:*"}) || before.Audiences != nil {
		t.Errorf("an entry returned earlier changed: scopes %q, audiences %q", before.Scopes, before.Audiences)
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
	oldTok := stableToken(token.DefaultPrefix, "rotated-out")
	newTok := stableToken(token.DefaultPrefix, "rotated-in")
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
	tok := stableToken(token.DefaultPrefix, "bad-hash")
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
	tok := stableToken(token.DefaultPrefix, "concurrent")
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
			other := stableToken(token.DefaultPrefix, fmt.Sprint("churn-", i%7))
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
	a, b := stableToken(token.DefaultPrefix, "usage-a"), stableToken(token.DefaultPrefix, "usage-b")
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
		tok := stableToken(token.DefaultPrefix, "comma")
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
