package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// createdTTL bounds how long a created record may stay unseen by the cache
// before the controller stops vouching for it and asks the API server.
const createdTTL = 30 * time.Second

// createdRecords remembers the records this process created until its
// cache shows them. A pass reads records from the cache, which may lag its
// own writes by a moment; with these it never mistakes a record it just
// created for a missing one, and so never needs to list records from the
// API server (a read of every record in the cluster) to issue a new key.
type createdRecords struct {
	mu    sync.Mutex
	byKey map[types.UID][]created
}

type created struct {
	record apikeysv1alpha1.ApiKeyRecord
	at     time.Time
}

// add notes a record just created for the key with UID uid.
func (c *createdRecords) add(uid types.UID, rec *apikeysv1alpha1.ApiKeyRecord, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey == nil {
		c.byKey = map[types.UID][]created{}
	}
	c.byKey[uid] = append(c.byKey[uid], created{record: *rec.DeepCopy(), at: now})
}

// update replaces the noted copy of a record created for the key with UID
// uid by rec, after this process wrote it again.
func (c *createdRecords) update(uid types.UID, rec *apikeysv1alpha1.ApiKeyRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.byKey[uid] {
		if c.byKey[uid][i].record.Name == rec.Name {
			c.byKey[uid][i].record = *rec.DeepCopy()
		}
	}
}

// forget drops a record this process deleted, or every record of a key
// (name "") that is going.
func (c *createdRecords) forget(uid types.UID, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pending, ok := c.byKey[uid]
	if !ok {
		return
	}
	var kept []created
	for _, cr := range pending {
		if name != "" && cr.record.Name != name {
			kept = append(kept, cr)
		}
	}
	if len(kept) == 0 {
		delete(c.byKey, uid)
	} else {
		c.byKey[uid] = kept
	}
}

// merge adds to the records the cache lists for a key those this process
// created that the cache does not show yet, and forgets those it now shows.
// stale reports a created record older than createdTTL that the cache still
// does not show: the caller should then ask the API server.
func (c *createdRecords) merge(uid types.UID, cached []apikeysv1alpha1.ApiKeyRecord,
	now time.Time) (records []apikeysv1alpha1.ApiKeyRecord, stale bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pending := c.byKey[uid]
	if len(pending) == 0 {
		return cached, false
	}
	seen := make(map[string]bool, len(cached))
	for i := range cached {
		seen[cached[i].Name] = true
	}
	records = cached
	var still []created
	for _, cr := range pending {
		switch {
		case seen[cr.record.Name]:
		case now.Sub(cr.at) > createdTTL:
			stale = true
		default:
			still = append(still, cr)
			records = append(records, *cr.record.DeepCopy())
		}
	}
	if len(still) == 0 {
		delete(c.byKey, uid)
	} else {
		c.byKey[uid] = still
	}
	return records, stale
}
