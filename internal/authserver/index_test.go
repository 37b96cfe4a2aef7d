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
			_ = ix.keyStates()
		}
	})
	wg.Wait()
	assertCode(t, ix, tok, CodeValid)
	if ix.Len() != 1 {
		t.Errorf("Len = %d, want 1", ix.Len())
	}
}

// TestIndexUsage checks that a key's tokens share one last-used tracker,
// which forgets the key when it is deleted.
func TestIndexUsage(t *testing.T) {
	ix := NewIndex()
	key := informerKey(fixtureNamespace, fixtureName, fixtureKeyUID)
	a, b := stableToken(token.DefaultPrefix, "usage-a"), stableToken(token.DefaultPrefix, "usage-b")
	ix.SetRecord(issuedRecord(a, key)) // the record may arrive before its key
	ix.SetKey(key)
	ix.SetRecord(issuedRecord(b, key))

	ea, _ := ix.Verify(a, fixtureNow)
	eb, _ := ix.Verify(b, fixtureNow)
	if ea == nil || eb == nil || ea.key == nil || ea.key != eb.key {
		t.Fatal("the tokens of one key do not share a usage tracker")
	}
	ea.markUsed(fixtureNow)
	ea.markUsed(fixtureNow.Add(-time.Hour)) // an older time never moves it back
	if got := eb.key.lastUsed.Load(); got != fixtureNow.Unix() {
		t.Errorf("lastUsed = %d, want %d", got, fixtureNow.Unix())
	}
	if u := ix.keyStates(); len(u) != 1 || u[0].namespace != fixtureNamespace || u[0].name != fixtureName || u[0].uid != key.UID {
		t.Errorf("usages = %+v", u)
	}
	ix.DeleteKey(key.UID)
	if u := ix.keyStates(); len(u) != 0 {
		t.Errorf("a deleted key still has %d usage trackers", len(u))
	}
}

func assertCode(t *testing.T, ix *Index, tok string, want Code) {
	t.Helper()
	if _, code := ix.Verify(tok, fixtureNow); code != want {
		t.Errorf("Verify(%s) = %v, want %v", token.Hint(tok), code, want)
	}
}
