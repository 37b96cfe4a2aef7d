// Package authserver answers "is this bearer token valid, and who is it?"
// for kube-apiserver (TokenReview), proxies (forward-auth) and services (the
// JSON verify API), from an in-memory index of ApiKeyRecords kept current by
// watches. Nothing on the request path calls the API server.
//
// It defines no API: the types it decodes ApiKeys into (keyHeader) are
// not CRDs.
// +kubebuilder:skip
package authserver

import (
	"encoding/binary"
	"iter"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// Entry is what the index knows about one token. Entries are immutable once
// in the index, so the request path reads them without locks or copies.
//
// The index is the auth server's only copy of its records, so an entry is
// kept small (TestEntrySize holds it to Go's 192-byte size class): what many
// tokens share (namespace, groups, scopes, audiences and their header
// values) is its group's, and the strings the entry holds alone are not
// copied twice.
type Entry struct {
	hash [32]byte

	Username string
	// UID is the record's spec.uid as the controller wrote it (for identity
	// Key, the ApiKey's UID); empty when the owner has none.
	UID  string
	Name string
	Hint string

	// expires is when the token stops working, in Unix nanoseconds (the
	// earlier of its expiry and, for a superseded token, the end of its
	// grace period); 0: never.
	expires int64

	group  *group
	key    *keyState
	record *recordState

	Suspended bool
}

// Namespace is the namespace of the token's ApiKey.
func (e *Entry) Namespace() string { return e.group.namespace }

// Groups are the groups the token authenticates with. The slice is shared:
// callers must not modify it.
func (e *Entry) Groups() []string { return e.group.groups }

// Scopes are the scopes the token grants. The slice is shared: callers must
// not modify it.
func (e *Entry) Scopes() []string { return e.group.scopes }

// Audiences are the audiences the token is restricted to; none: any, on
// forward-auth and /verify (TokenReview answers such a key with no audience,
// which kube-apiserver reads as its own). The slice is shared: callers must
// not modify it.
func (e *Entry) Audiences() []string { return e.group.audiences }

// ExpiresAt is when the token stops working; the zero time: never.
func (e *Entry) ExpiresAt() time.Time {
	if e.expires == 0 {
		return time.Time{}
	}
	return time.Unix(0, e.expires)
}

// forwardHeaders are forward-auth's identity header values, in the order of
// forwardHeaderNames: the entry's own and its group's.
func (e *Entry) forwardHeaders() [5][]string {
	g := e.group
	// The user and name values point into the entry itself, which is
	// immutable; with cap 1, a later Header.Add copies rather than writing
	// into it. Made here, they cost the entry nothing.
	return [5][]string{unsafe.Slice(&e.Username, 1), g.groupsHeader, g.scopesHeader, unsafe.Slice(&e.Name, 1), g.namespaceHeader}
}

// expiryNanos is t in Unix nanoseconds as Entry.expires holds it: never 0,
// which means no expiry, and clamped to what an int64 holds. An instant
// before 1970 reads as 1 ns after it, long past either way; one after 2262
// reads as 2262, long ahead.
func expiryNanos(t time.Time) int64 {
	switch {
	case !t.After(time.Unix(0, 0)):
		return 1
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// keyState is what the index knows of an ApiKey itself, shared by every
// entry of the key so the request path reads it without a second lookup.
// Revocation (deletion) and suspension take effect from the ApiKey at once,
// without waiting for the controller to update the record.
type keyState struct {
	present   atomic.Bool // the ApiKey exists (a record alone proves nothing)
	deleting  atomic.Bool
	suspended atomic.Bool

	// refs counts the entries pointing here; guarded by the index's lock.
	refs int32
	uid  types.UID
}

// recordState is what the index keeps per ApiKeyRecord beside its entry:
// when its token last authenticated (Unix seconds), and what the usage
// flusher needs to move the record's status.lastUsedAt forward without
// reading it first. It outlives the record's entries, which a spec change
// replaces, so a use noted on the request path waits for the flusher,
// which writes it to the record's status: never the ApiKey, whose status
// issuance reads.
type recordState struct {
	lastUsed atomic.Int64
	flushed  atomic.Int64

	// The record as last seen, guarded by the index's lock: its generation
	// (a status write leaves it), status.lastUsedAt (Unix seconds, 0 if
	// unset) and resourceVersion.
	generation      int64
	usedAt          int64
	resourceVersion string
}

// group is what many tokens share, held once per distinct combination and
// counted by the entries that use it.
type group struct {
	namespace                 string
	groups, scopes, audiences []string
	// The X-Auth-Request-Groups, X-Auth-Request-Scopes and
	// X-Apikey-Namespace values, each of cap 1 as the entry's own.
	groupsHeader, scopesHeader, namespaceHeader []string

	refs int
}

// Index maps token hashes to entries. Writers are the watches of records
// and keys; readers are requests.
type Index struct {
	mu      sync.RWMutex
	entries entryTable
	keys    map[types.UID]*keyState
	groups  map[string]*group // by groupID
	// The controller names a record after its hash (sha256-<hex>), so the
	// index derives a record's name from its hash. Records named otherwise
	// (by hand) are remembered here, in both directions.
	otherNames  map[string][32]byte
	otherHashes map[[32]byte]string

	// terminating is the set of namespaces being deleted, replaced whole on
	// each change so that the request path reads it without the lock; nil
	// while no namespace is being deleted.
	terminating atomic.Pointer[map[string]struct{}]

	synced     atomic.Bool
	lastChange atomic.Int64 // Unix nanoseconds of the last index change
}

// NewIndex returns an empty index that reports not synced until MarkSynced.
func NewIndex() *Index {
	return &Index{
		entries:     entryTable{byHead: map[uint64]*Entry{}},
		keys:        map[types.UID]*keyState{},
		groups:      map[string]*group{},
		otherNames:  map[string][32]byte{},
		otherHashes: map[[32]byte]string{},
	}
}

// Synced reports whether the index holds every record and key that existed
// when the auth server started.
func (ix *Index) Synced() bool { return ix.synced.Load() }

// MarkSynced declares the initial listing complete.
func (ix *Index) MarkSynced() {
	ix.lastChange.Store(time.Now().UnixNano())
	ix.synced.Store(true)
}

// Len is the number of tokens in the index.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.entries.len()
}

// LastChange is when the index last changed (or synced).
func (ix *Index) LastChange() time.Time { return time.Unix(0, ix.lastChange.Load()) }

// SetRecord adds or replaces the entry for rec. A record whose hash does not
// parse is ignored: the API server's schema already refuses it. So is one
// with a group name holding a comma, which forward-auth's comma-separated
// X-Auth-Request-Groups would split into two groups: the CRD and the
// controller refuse such names, and the index does not trust that they did.
// Either way the token stops working if an earlier version of the record
// was indexed. A record being deleted is revoked: its token stops working
// when the deletion starts, not when some other finalizer lets it end.
func (ix *Index) SetRecord(rec *apikeysv1alpha1.ApiKeyRecord) {
	sum, err := token.ParseHash(rec.Spec.TokenHash)
	if err != nil || rec.DeletionTimestamp != nil {
		ix.DeleteRecord(rec.Name)
		return
	}
	if slices.ContainsFunc(rec.Spec.Groups, func(g string) bool { return strings.Contains(g, ",") }) {
		ctrl.Log.WithName("authserver").V(1).Info("Not indexing a record with a group name containing ','", "record", rec.Name)
		ix.DeleteRecord(rec.Name)
		return
	}
	if !policy.HeaderSafe(rec.Spec.Username) || slices.ContainsFunc(rec.Spec.Groups, func(g string) bool { return !policy.HeaderSafe(g) }) {
		ctrl.Log.WithName("authserver").V(1).Info("Not indexing a record whose username or a group would change in a header", "record", rec.Name)
		ix.DeleteRecord(rec.Name)
		return
	}
	id := groupID(&rec.Spec)

	ix.mu.Lock()
	defer ix.mu.Unlock()
	if prev, ok := ix.ownedHashLocked(rec.Name); ok && prev != sum {
		ix.removeLocked(prev)
	}
	old := ix.entries.get(&sum)
	state := &recordState{}
	if old != nil && ix.recordNameLocked(sum) == rec.Name {
		state = old.record
	}
	ix.claimHashLocked(sum, rec.Name)
	state.generation, state.resourceVersion = rec.Generation, rec.ResourceVersion
	state.usedAt = 0
	if t := rec.Status.LastUsedAt; t != nil {
		state.usedAt = t.Unix()
	}
	e := ix.entryLocked(rec, sum, id)
	e.record = state
	if old != nil {
		ix.releaseLocked(old)
	}
	ix.entries.set(e)
	ix.touchLocked()
}

// UpdateRecord takes a newer version of an indexed record. One that only
// changed its status (the same generation: a usage flush, this replica's or
// another's) keeps its entry; anything else replaces it, as SetRecord does,
// and one whose deletion has started goes.
func (ix *Index) UpdateRecord(rec *apikeysv1alpha1.ApiKeyRecord) {
	if sum, err := token.ParseHash(rec.Spec.TokenHash); err == nil && rec.Generation != 0 && rec.DeletionTimestamp == nil {
		ix.mu.Lock()
		e := ix.entries.get(&sum)
		if e != nil && e.record.generation == rec.Generation && ix.recordNameLocked(sum) == rec.Name {
			e.record.resourceVersion = rec.ResourceVersion
			e.record.usedAt = 0
			if t := rec.Status.LastUsedAt; t != nil {
				e.record.usedAt = t.Unix()
			}
			ix.mu.Unlock()
			return
		}
		ix.mu.Unlock()
	}
	ix.SetRecord(rec)
}

// DeleteRecord removes the entry of the record called name.
func (ix *Index) DeleteRecord(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if sum, ok := ix.ownedHashLocked(name); ok {
		ix.removeLocked(sum)
		ix.touchLocked()
	}
}

// ReplaceRecords makes the index hold exactly records, as a new listing
// says: each is set, and every other record's entry goes.
func (ix *Index) ReplaceRecords(records []*apikeysv1alpha1.ApiKeyRecord) {
	listed := make(map[[32]byte]bool, len(records))
	for _, rec := range records {
		ix.SetRecord(rec)
		if sum, err := token.ParseHash(rec.Spec.TokenHash); err == nil {
			listed[sum] = true
		}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for e := range ix.entries.all() {
		if !listed[e.hash] {
			ix.removeLocked(e.hash)
		}
	}
	ix.touchLocked()
}

// SetKey records an ApiKey's deletion and suspension state.
func (ix *Index) SetKey(key *apikeysv1alpha1.ApiKey) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ks := ix.keyLocked(key.UID)
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
		if ks.refs == 0 {
			delete(ix.keys, uid)
		}
	}
	ix.touchLocked()
}

// ReplaceKeys makes the index know exactly keys, as a new listing says.
func (ix *Index) ReplaceKeys(keys []*apikeysv1alpha1.ApiKey) {
	listed := make(map[types.UID]bool, len(keys))
	for _, key := range keys {
		ix.SetKey(key)
		listed[key.UID] = true
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for uid, ks := range ix.keys {
		if !listed[uid] {
			ks.present.Store(false)
			if ks.refs == 0 {
				delete(ix.keys, uid)
			}
		}
	}
	ix.touchLocked()
}

// SetNamespace records whether the namespace called name is being deleted.
// From the moment it is, every token of an ApiKey in it is refused: the
// namespace controller deletes the ApiKeys themselves only later, one
// resource type at a time, and not at all while it is down.
func (ix *Index) SetNamespace(name string, deleting bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.namespaceDeleting(name) == deleting {
		return // most namespace events: a live namespace changed
	}
	ix.setTerminatingLocked(func(set map[string]struct{}) {
		if deleting {
			set[name] = struct{}{}
		} else {
			delete(set, name)
		}
	})
}

// ReplaceNamespaces makes the namespaces being deleted exactly those named
// in deleting, as a new listing says.
func (ix *Index) ReplaceNamespaces(deleting []string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setTerminatingLocked(func(set map[string]struct{}) {
		clear(set)
		for _, name := range deleting {
			set[name] = struct{}{}
		}
	})
}

// setTerminatingLocked applies change to a copy of the terminating set and
// publishes the copy (nil if it is empty) if it differs.
func (ix *Index) setTerminatingLocked(change func(map[string]struct{})) {
	old := ix.terminating.Load()
	set := map[string]struct{}{}
	if old != nil {
		maps.Copy(set, *old)
	}
	change(set)
	switch {
	case old == nil && len(set) == 0, old != nil && maps.Equal(set, *old):
		return
	case len(set) == 0:
		ix.terminating.Store(nil)
	default:
		ix.terminating.Store(&set)
	}
	ix.touchLocked()
}

// namespaceDeleting reports whether ns is being deleted.
func (ix *Index) namespaceDeleting(ns string) bool {
	set := ix.terminating.Load()
	if set == nil {
		return false
	}
	_, ok := (*set)[ns]
	return ok
}

// keyLocked returns the state of the key with uid, creating it (not
// present until the ApiKey itself is seen).
func (ix *Index) keyLocked(uid types.UID) *keyState {
	ks, ok := ix.keys[uid]
	if !ok {
		ks = &keyState{uid: uid}
		ix.keys[uid] = ks
	}
	return ks
}

// removeLocked drops the entry of sum and whatever only it used.
func (ix *Index) removeLocked(sum [32]byte) {
	e := ix.entries.get(&sum)
	if e == nil {
		return
	}
	ix.entries.delete(&sum)
	if name, ok := ix.otherHashes[sum]; ok {
		delete(ix.otherHashes, sum)
		delete(ix.otherNames, name)
	}
	ix.releaseLocked(e)
}

// releaseLocked drops e's hold on its key and its group.
func (ix *Index) releaseLocked(e *Entry) {
	if ks := e.key; ks != nil {
		ks.refs--
		if ks.refs == 0 && !ks.present.Load() && ix.keys[ks.uid] == ks {
			delete(ix.keys, ks.uid)
		}
	}
	if g := e.group; g != nil {
		g.refs--
		if g.refs == 0 {
			delete(ix.groups, g.id())
		}
	}
}

// ownedHashLocked is the hash whose entry the record called name holds.
func (ix *Index) ownedHashLocked(name string) ([32]byte, bool) {
	if sum, ok := ix.otherNames[name]; ok {
		return sum, true
	}
	sum, ok := apikeysv1alpha1.RecordHash(name)
	if !ok {
		return sum, false
	}
	if _, other := ix.otherHashes[sum]; other {
		return sum, false
	}
	return sum, ix.entries.get(&sum) != nil
}

// claimHashLocked notes that the record called name now holds sum's entry
// (which a record of another name may have held).
func (ix *Index) claimHashLocked(sum [32]byte, name string) {
	if prev, ok := ix.otherHashes[sum]; ok {
		delete(ix.otherNames, prev)
		delete(ix.otherHashes, sum)
	}
	if own, ok := apikeysv1alpha1.RecordHash(name); !ok || own != sum {
		ix.otherNames[name] = sum
		ix.otherHashes[sum] = name
	}
}

// recordNameLocked is the name of the record holding sum's entry.
func (ix *Index) recordNameLocked(sum [32]byte) string {
	if name, ok := ix.otherHashes[sum]; ok {
		return name
	}
	return apikeysv1alpha1.RecordName(sum)
}

func (ix *Index) touchLocked() { ix.lastChange.Store(time.Now().UnixNano()) }

// entryTable finds an entry by its token's SHA-256. The map is keyed by the
// hash's first 8 bytes: SHA-256 is uniform, so among a million hashes two
// share them about once in 2^25 indexes, and a uint64 key hashes faster and
// takes 24 bytes less per slot than the whole hash. The entry's whole hash
// is compared after. A hash whose first 8 bytes another entry holds (by
// chance, or a hand-made record that copies them) goes in overflow, so a
// shared head costs a second lookup, never a wrong answer.
type entryTable struct {
	byHead   map[uint64]*Entry
	overflow map[[32]byte]*Entry // nil until a head is shared
}

// head is the map key of sum.
func head(sum *[32]byte) uint64 { return binary.LittleEndian.Uint64(sum[:8]) }

// get returns the entry whose hash is sum, or nil.
func (t *entryTable) get(sum *[32]byte) *Entry {
	if e := t.byHead[head(sum)]; e != nil && sameHash(&e.hash, sum) {
		return e
	}
	if len(t.overflow) == 0 {
		return nil
	}
	return t.overflow[*sum]
}

// set adds e, or replaces the entry with e's hash.
func (t *entryTable) set(e *Entry) {
	if _, ok := t.overflow[e.hash]; ok {
		t.overflow[e.hash] = e
		return
	}
	k := head(&e.hash)
	if cur := t.byHead[k]; cur == nil || cur.hash == e.hash {
		t.byHead[k] = e
		return
	}
	if t.overflow == nil {
		t.overflow = map[[32]byte]*Entry{}
	}
	t.overflow[e.hash] = e
}

// delete removes the entry whose hash is sum, if any.
func (t *entryTable) delete(sum *[32]byte) {
	k := head(sum)
	if cur := t.byHead[k]; cur != nil && cur.hash == *sum {
		delete(t.byHead, k)
		return
	}
	delete(t.overflow, *sum)
}

func (t *entryTable) len() int { return len(t.byHead) + len(t.overflow) }

// all yields every entry; the loop body may delete the entry it is given.
func (t *entryTable) all() iter.Seq[*Entry] {
	return func(yield func(*Entry) bool) {
		for _, e := range t.byHead {
			if !yield(e) {
				return
			}
		}
		for _, e := range t.overflow {
			if !yield(e) {
				return
			}
		}
	}
}

// sameHash reports whether a and b are equal, in time that does not depend
// on where they differ: the comparison that must be constant-time (docs/security.md, Tokens).
// Both are SHA-256 outputs, so an early exit would leak only how much of a
// stored hash a guess's hash shares, which brings no token nearer. Being
// constant-time costs nothing here: 4 words XORed and ORed are as cheap as
// 4 compared, where crypto/subtle's byte loop cost Verify more than its map
// lookup did.
func sameHash(a, b *[32]byte) bool {
	var diff uint64
	for i := 0; i < len(a); i += 8 {
		diff |= binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:])
	}
	return diff == 0
}

// recordUse is a record whose token was used since its last flush, with
// what the flusher needs to write it: the record's status.lastUsedAt and
// resourceVersion as last seen.
type recordUse struct {
	name            string
	state           *recordState
	usedAt          int64
	resourceVersion string
}

// unflushedUses returns the records whose tokens authenticated since their
// use was last flushed.
func (ix *Index) unflushedUses() []recordUse {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []recordUse
	for e := range ix.entries.all() {
		if rs := e.record; rs.lastUsed.Load() > rs.flushed.Load() {
			out = append(out, recordUse{name: ix.recordNameLocked(e.hash), state: rs, usedAt: rs.usedAt, resourceVersion: rs.resourceVersion})
		}
	}
	return out
}

// entryLocked builds the entry for rec, sharing what it can with the rest of
// the index: its key's state and UID, and the group id names.
func (ix *Index) entryLocked(rec *apikeysv1alpha1.ApiKeyRecord, sum [32]byte, id string) *Entry {
	s := &rec.Spec
	g := ix.groupLocked(id, s)
	ks := ix.keyLocked(types.UID(s.ApiKey.UID))
	ks.refs++
	e := &Entry{
		hash:      sum,
		Username:  s.Username,
		UID:       s.UID,
		Name:      s.ApiKey.Name,
		Hint:      s.TokenHint,
		Suspended: s.Suspended,
		group:     g,
		key:       ks,
	}
	if e.UID == string(ks.uid) {
		e.UID = string(ks.uid)
	}
	// For identity Key the username ends with the name: keep one string.
	if strings.HasSuffix(e.Username, e.Name) {
		e.Name = e.Username[len(e.Username)-len(e.Name):]
	}
	// The header values point into the entry itself.
	var expires time.Time
	if s.ExpiresAt != nil {
		expires = s.ExpiresAt.Time
	}
	if s.ValidUntil != nil && (expires.IsZero() || s.ValidUntil.Time.Before(expires)) {
		expires = s.ValidUntil.Time
	}
	if !expires.IsZero() {
		e.expires = expiryNanos(expires)
	}
	return e
}

// groupLocked returns the group with id, made from s if new, and counts one
// more entry using it.
func (ix *Index) groupLocked(id string, s *apikeysv1alpha1.ApiKeyRecordSpec) *group {
	g := ix.groups[id]
	if g == nil {
		g = &group{
			namespace: s.ApiKey.Namespace,
			groups:    slices.Clip(slices.Clone(s.Groups)),
			scopes:    slices.Clip(slices.Clone(s.Scopes)),
			audiences: slices.Clip(slices.Clone(s.Audiences)),
		}
		g.groupsHeader = []string{strings.Join(g.groups, ",")}
		g.scopesHeader = []string{strings.Join(g.scopes, " ")}
		g.namespaceHeader = []string{g.namespace}
		ix.groups[id] = g
	}
	g.refs++
	return g
}

// id is the group's key in the index's groups.
func (g *group) id() string {
	return groupID(&apikeysv1alpha1.ApiKeyRecordSpec{
		ApiKey: apikeysv1alpha1.ApiKeyReference{Namespace: g.namespace}, Groups: g.groups, Scopes: g.scopes, Audiences: g.audiences,
	})
}

// groupID names the combination of namespace, groups, scopes and audiences
// that s carries, unambiguously: every string is preceded by its length,
// every list by its count.
func groupID(s *apikeysv1alpha1.ApiKeyRecordSpec) string {
	var b []byte
	str := func(v string) {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	str(s.ApiKey.Namespace)
	for _, list := range [][]string{s.Groups, s.Scopes, s.Audiences} {
		b = binary.AppendUvarint(b, uint64(len(list)))
		for _, v := range list {
			str(v)
		}
	}
	return string(b)
}
