// Package authserver answers "is this bearer token valid, and who is it?"
// for kube-apiserver (TokenReview), proxies (forward-auth) and services (the
// JSON verify API), from an in-memory index of ApiKeyRecords kept current by
// informers. Nothing on the request path calls the API server.
package authserver

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// Entry is what the index knows about one token. Entries are immutable once
// in the index, so the request path reads them without locks or copies.
type Entry struct {
	hash [32]byte

	Username string
	// UID is the record's spec.uid as the controller wrote it (for identity
	// Key, the ApiKey's UID); empty when the owner has none.
	UID       string
	Groups    []string
	Scopes    []string
	Audiences []string
	// ExpiresAt is when the token stops working (the earlier of its expiry
	// and, for a superseded token, the end of its grace period); zero: never.
	ExpiresAt time.Time
	Suspended bool
	Namespace string
	Name      string
	KeyUID    types.UID
	Hint      string

	// Header values, joined once here rather than on every request.
	groupsHeader string
	scopesHeader string
	// forwardHeaders are forward-auth's identity header values, built once
	// per entry and shared by every answer. Each slice has cap 1, so a later
	// Header.Add copies rather than writing into the shared array.
	forwardHeaders [5][]string

	key    *keyState
	record *recordState
}

// keyState is what the index knows of an ApiKey itself, shared by every
// entry of the key so the request path reads it without a second lookup.
// Revocation (deletion) and suspension take effect from the ApiKey at once,
// without waiting for the controller to update the record.
type keyState struct {
	namespace, name string
	uid             types.UID

	present   atomic.Bool // the ApiKey exists (a record alone proves nothing)
	deleting  atomic.Bool
	suspended atomic.Bool
}

// recordState is what the index keeps per ApiKeyRecord name: the hash the
// record stands for, and when its token last authenticated (Unix seconds).
// It outlives the record's entries, which an informer update replaces, so
// a use noted on the request path waits for the usage flusher, which writes
// it to the record's status: never the ApiKey, whose status issuance reads.
type recordState struct {
	hash [32]byte

	lastUsed atomic.Int64
	flushed  atomic.Int64
}

// Index maps token hashes to entries. Writers are informer event handlers;
// readers are requests.
type Index struct {
	mu      sync.RWMutex
	byHash  map[[32]byte]*Entry
	records map[string]*recordState // by record name
	keys    map[types.UID]*keyState

	synced   atomic.Bool
	lastSync atomic.Int64 // Unix nanoseconds of the last index change
}

// NewIndex returns an empty index that reports not synced until MarkSynced.
func NewIndex() *Index {
	return &Index{
		byHash:  map[[32]byte]*Entry{},
		records: map[string]*recordState{},
		keys:    map[types.UID]*keyState{},
	}
}

// Synced reports whether the index holds every record and key that existed
// when the auth server started.
func (ix *Index) Synced() bool { return ix.synced.Load() }

// MarkSynced declares the initial listing complete.
func (ix *Index) MarkSynced() {
	ix.lastSync.Store(time.Now().UnixNano())
	ix.synced.Store(true)
}

// Len is the number of tokens in the index.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byHash)
}

// LastChange is when the index last changed (or synced).
func (ix *Index) LastChange() time.Time { return time.Unix(0, ix.lastSync.Load()) }

// SetRecord adds or replaces the entry for rec. A record whose hash does not
// parse is ignored: the API server's schema already refuses it. So is one
// with a group name holding a comma, which forward-auth's comma-separated
// X-Auth-Request-Groups would split into two groups: the CRD and the
// controller refuse such names, and the index does not trust that they did.
// Either way the token stops working if an earlier version of the record
// was indexed.
func (ix *Index) SetRecord(rec *apikeysv1alpha1.ApiKeyRecord) {
	sum, err := token.ParseHash(rec.Spec.TokenHash)
	if err != nil {
		ix.DeleteRecord(rec.Name)
		return
	}
	if slices.ContainsFunc(rec.Spec.Groups, func(g string) bool { return strings.Contains(g, ",") }) {
		ctrl.Log.WithName("authserver").V(1).Info("Not indexing a record with a group name containing ','", "record", rec.Name)
		ix.DeleteRecord(rec.Name)
		return
	}
	e := entryFor(rec, sum)

	ix.mu.Lock()
	defer ix.mu.Unlock()
	e.key = ix.keyLocked(e.KeyUID, e.Namespace, e.Name)
	rs := ix.records[rec.Name]
	if rs == nil || rs.hash != sum {
		if rs != nil {
			delete(ix.byHash, rs.hash)
		}
		rs = &recordState{hash: sum}
		ix.records[rec.Name] = rs
	}
	e.record = rs
	ix.byHash[sum] = e
	ix.touchLocked()
}

// DeleteRecord removes the entry of the record called name.
func (ix *Index) DeleteRecord(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if rs, ok := ix.records[name]; ok {
		delete(ix.byHash, rs.hash)
		delete(ix.records, name)
		ix.touchLocked()
	}
}

// SetKey records an ApiKey's deletion and suspension state.
func (ix *Index) SetKey(key *apikeysv1alpha1.ApiKey) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ks := ix.keyLocked(key.UID, key.Namespace, key.Name)
	ks.deleting.Store(!key.DeletionTimestamp.IsZero())
	ks.suspended.Store(key.Spec.Suspended)
	ks.present.Store(true)
	ix.touchLocked()
}

// DeleteKey forgets an ApiKey: its tokens stop working at once, even if the
// controller has not yet deleted their records.
func (ix *Index) DeleteKey(uid types.UID) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ks, ok := ix.keys[uid]; ok {
		ks.present.Store(false)
		delete(ix.keys, uid)
	}
	ix.touchLocked()
}

// keyLocked returns the state of the key with uid, creating it (not
// present until the ApiKey itself is seen).
func (ix *Index) keyLocked(uid types.UID, namespace, name string) *keyState {
	ks, ok := ix.keys[uid]
	if !ok {
		ks = &keyState{namespace: namespace, name: name, uid: uid}
		ix.keys[uid] = ks
	}
	return ks
}

func (ix *Index) touchLocked() { ix.lastSync.Store(time.Now().UnixNano()) }

// recordUse is a record whose token was used since its last flush.
type recordUse struct {
	name  string
	state *recordState
}

// unflushedUses returns the records whose tokens authenticated since their
// use was last flushed.
func (ix *Index) unflushedUses() []recordUse {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []recordUse
	for name, rs := range ix.records {
		if rs.lastUsed.Load() > rs.flushed.Load() {
			out = append(out, recordUse{name: name, state: rs})
		}
	}
	return out
}

func entryFor(rec *apikeysv1alpha1.ApiKeyRecord, sum [32]byte) *Entry {
	s := &rec.Spec
	e := &Entry{
		hash:         sum,
		Username:     s.Username,
		UID:          s.UID,
		Groups:       s.Groups,
		Scopes:       s.Scopes,
		Audiences:    s.Audiences,
		Suspended:    s.Suspended,
		Namespace:    s.ApiKey.Namespace,
		Name:         s.ApiKey.Name,
		KeyUID:       types.UID(s.ApiKey.UID),
		Hint:         s.TokenHint,
		groupsHeader: strings.Join(s.Groups, ","),
		scopesHeader: strings.Join(s.Scopes, " "),
	}
	e.forwardHeaders = [5][]string{{e.Username}, {e.groupsHeader}, {e.scopesHeader}, {e.Name}, {e.Namespace}}
	if s.ExpiresAt != nil {
		e.ExpiresAt = s.ExpiresAt.Time
	}
	if s.ValidUntil != nil && (e.ExpiresAt.IsZero() || s.ValidUntil.Time.Before(e.ExpiresAt)) {
		e.ExpiresAt = s.ValidUntil.Time
	}
	return e
}
