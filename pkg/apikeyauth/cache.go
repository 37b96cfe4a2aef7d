package apikeyauth

import (
	"container/list"
	"crypto/sha256"
	"slices"
	"strconv"
	"sync"
	"time"
)

// cacheKey names one question asked of the auth server. The token is held
// only as its SHA-256; the audience is fixed per Client, and each Client has
// its own cache, so it is part of every key by construction.
type cacheKey struct {
	tokenSum [sha256.Size]byte
	scopes   string // scopeSet.key
}

// scopeSet is a list of required scopes in canonical form: sorted, without
// duplicates, so that the same requirement in another order shares a cache
// entry.
type scopeSet struct {
	list []string
	// key encodes list unambiguously (each scope prefixed by its length),
	// so no two different lists share a key whatever their characters.
	key string
}

func newScopeSet(scopes []string) scopeSet {
	if len(scopes) == 0 {
		return scopeSet{}
	}
	sorted := slices.Compact(slices.Sorted(slices.Values(scopes)))
	var key []byte
	for _, s := range sorted {
		key = strconv.AppendInt(key, int64(len(s)), 10)
		key = append(key, ':')
		key = append(key, s...)
	}
	return scopeSet{list: sorted, key: string(key)}
}

// answer is what the auth server said about a token: an identity, or the
// code of a rejection.
type answer struct {
	identity *Identity
	code     string
}

// result returns the answer as Verify does. The identity is a copy, so a
// caller that changes it does not change what others are told.
func (a *answer) result() (*Identity, error) {
	if a.identity != nil {
		return a.identity.clone(), nil
	}
	return nil, &RejectedError{Code: a.code}
}

// answerCache is a bounded map of answers with expiry. When it is full,
// storing evicts the least recently used rejection, and only when it holds
// none the least recently used valid answer; a rejection never evicts a
// valid answer that has not expired (it is then not stored). Anyone can send tokens that are
// rejected, one new one per request: they churn the rejections and never
// push out the answers that spare the auth server a request for each
// client that holds a key. An expired entry is also dropped when it is
// looked up.
type answerCache struct {
	mu      sync.Mutex
	size    int
	entries map[cacheKey]*list.Element
	// valid and rejected hold *cacheEntry, most recently used first.
	valid, rejected *list.List
}

type cacheEntry struct {
	key     cacheKey
	answer  *answer
	expires time.Time
}

func newAnswerCache(size int) *answerCache {
	return &answerCache{size: size, entries: make(map[cacheKey]*list.Element), valid: list.New(), rejected: list.New()}
}

// listOf is the list that holds answers like a.
func (c *answerCache) listOf(a *answer) *list.List {
	if a.identity != nil {
		return c.valid
	}
	return c.rejected
}

// get returns the answer stored for key if it has not expired at now.
func (c *answerCache) get(key cacheKey, now time.Time) (*answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.listOf(e.answer).Remove(el)
		delete(c.entries, key)
		return nil, false
	}
	c.listOf(e.answer).MoveToFront(el)
	return e.answer, true
}

// put stores a for key until expires, making room as answerCache says
// (a valid answer expired at now counts as a rejection would).
func (c *answerCache) put(key cacheKey, a *answer, expires, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.listOf(el.Value.(*cacheEntry).answer).Remove(el)
		delete(c.entries, key)
	}
	if len(c.entries) >= c.size {
		victims := c.rejected
		if victims.Len() == 0 {
			victims = c.valid
			if a.identity == nil && now.Before(victims.Back().Value.(*cacheEntry).expires) {
				return
			}
		}
		oldest := victims.Back()
		victims.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry).key)
	}
	c.entries[key] = c.listOf(a).PushFront(&cacheEntry{key: key, answer: a, expires: expires})
}

// len is the number of entries, expired ones included.
func (c *answerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
