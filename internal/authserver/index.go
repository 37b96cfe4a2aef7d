// Package authserver answers "is this bearer token valid, and who is it?"
// for kube-apiserver (TokenReview), proxies (forward-auth) and services (the
// JSON verify API), from an in-memory index of ApiKeyRecords kept current by
// informers. Nothing on the request path calls the API server.
package authserver

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// Entry is what the index knows about one token. Entries are immutable once
// in the index, so the request path reads them without locks or copies.
type Entry struct {
	hash [32]byte

	Username  string
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

	usage *usage
}

// keyState is what the index needs from an ApiKey itself: revocation
// (deletion) and suspension take effect from the ApiKey at once, without
// waiting for the controller to update the record.
type keyState struct {
	deleting  bool
	suspended bool
}

// usage is the last time a key authenticated, in Unix seconds, shared by
// every entry of the key and flushed to its status off the request path.
type usage struct {
	namespace, name string
	uid             types.UID
	lastUsed        atomic.Int64
	flushed         atomic.Int64
}

// Index maps token hashes to entries. Writers are informer event handlers;
// readers are requests.
type Index struct {
	mu     sync.RWMutex
	byHash map[[32]byte]*Entry
	byName map[string][32]byte // record name -> hash, for deletes
	keys   map[types.UID]keyState
	usage  map[types.UID]*usage

	synced   atomic.Bool
	lastSync atomic.Int64 // Unix nanoseconds of the last index change
}

// NewIndex returns an empty index that reports not synced until MarkSynced.
func NewIndex() *Index {
	return &Index{
		byHash: map[[32]byte]*Entry{},
		byName: map[string][32]byte{},
		keys:   map[types.UID]keyState{},
		usage:  map[types.UID]*usage{},
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
// parse is ignored: the API server's schema already refuses it.
func (ix *Index) SetRecord(rec *apikeysv1alpha1.ApiKeyRecord) {
	sum, err := token.ParseHash(rec.Spec.TokenHash)
	if err != nil {
		return
	}
	e := entryFor(rec, sum)

	ix.mu.Lock()
	defer ix.mu.Unlock()
	e.usage = ix.usageLocked(e.KeyUID, e.Namespace, e.Name)
	if old, ok := ix.byName[rec.Name]; ok && old != sum {
		delete(ix.byHash, old)
	}
	ix.byHash[sum] = e
	ix.byName[rec.Name] = sum
	ix.touchLocked()
}

// DeleteRecord removes the entry of the record called name.
func (ix *Index) DeleteRecord(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if sum, ok := ix.byName[name]; ok {
		delete(ix.byHash, sum)
		delete(ix.byName, name)
		ix.touchLocked()
	}
}

// SetKey records an ApiKey's deletion and suspension state.
func (ix *Index) SetKey(key *apikeysv1alpha1.ApiKey) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.usageLocked(key.UID, key.Namespace, key.Name)
	ix.keys[key.UID] = keyState{deleting: !key.DeletionTimestamp.IsZero(), suspended: key.Spec.Suspended}
	ix.touchLocked()
}

// DeleteKey forgets an ApiKey: its tokens stop working at once, even if the
// controller has not yet deleted their records.
func (ix *Index) DeleteKey(uid types.UID) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	delete(ix.keys, uid)
	delete(ix.usage, uid)
	ix.touchLocked()
}

// usageLocked returns the usage tracker of the key with uid, creating it.
func (ix *Index) usageLocked(uid types.UID, namespace, name string) *usage {
	u, ok := ix.usage[uid]
	if !ok {
		u = &usage{namespace: namespace, name: name, uid: uid}
		ix.usage[uid] = u
	}
	return u
}

func (ix *Index) touchLocked() { ix.lastSync.Store(time.Now().UnixNano()) }

// usages returns the usage trackers of every live key.
func (ix *Index) usages() []*usage {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]*usage, 0, len(ix.usage))
	for _, u := range ix.usage {
		out = append(out, u)
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
	if e.UID == "" {
		e.UID = s.ApiKey.UID
	}
	if s.ExpiresAt != nil {
		e.ExpiresAt = s.ExpiresAt.Time
	}
	if s.ValidUntil != nil && (e.ExpiresAt.IsZero() || s.ValidUntil.Time.Before(e.ExpiresAt)) {
		e.ExpiresAt = s.ValidUntil.Time
	}
	return e
}
