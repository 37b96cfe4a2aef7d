package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// keyRecords is what the controller keeps of ApiKeyRecords, without an
// informer cache of them: for each ApiKey, by a digest of its UID, the
// names of its records and the resourceVersions last seen, about 150
// bytes a key where a trimmed cached record cost about 1 KB. A watch feeds
// it, and updates it before it wakes the record's key, so the pass that
// follows sees the record; a pass reads the records from kube-apiserver at
// those resourceVersions or later (reads its watch cache serves).
//
// It is a controller-runtime source: it starts with the ApiKey controller
// (on the leader), and the controller starts its workers once the watch
// has listed every record.
type keyRecords struct {
	storeless
	client client.WithWatch

	mu    sync.RWMutex
	byKey map[digest][]recordRef // digest(key UID) → its records
	queue workqueue.TypedRateLimitingInterface[reconcile.Request]
	// firstListing holds the records of the first listing until their
	// key's first pass reads them, as watchedKeys holds the keys; the
	// record collector drops those whose key the controller does not know.
	firstListing stash[string, *apikeysv1alpha1.ApiKeyRecord]
	// keyUIDs lists the ApiKeys the controller knows, to wake those whose
	// records changed while the watch was broken off.
	keyUIDs func() []keyUID
	// changed is told of each record created or changed after the first
	// listing whose key the controller does not know (the record
	// collector's queue).
	changed func(*apikeysv1alpha1.ApiKeyRecord)
	// seen is told of each record the watch shows (the controller's
	// records created but not shown yet).
	seen func(*apikeysv1alpha1.ApiKeyRecord)
}

// recordRef names a record and the resourceVersion last seen of it. A
// record named as the controller names them, after its token's hash, is
// kept as the hash's 32 bytes: its name's 71 characters would cost 80.
type recordRef struct {
	hash            [sha256.Size]byte // if the name is RecordNamePrefix + its hex
	other           string            // else the name
	resourceVersion uint64            // 0 if not a number: read the newest
}

// name is the record's name.
func (ref recordRef) name() string {
	if ref.other != "" {
		return ref.other
	}
	return apikeysv1alpha1.RecordNamePrefix + hex.EncodeToString(ref.hash[:])
}

// refNamed is the reference of the record name at resourceVersion rv.
func refNamed(name string, rv uint64) recordRef {
	ref := recordRef{resourceVersion: rv}
	digits, ok := strings.CutPrefix(name, apikeysv1alpha1.RecordNamePrefix)
	if !ok || len(digits) != hex.EncodedLen(sha256.Size) {
		return recordRef{other: name, resourceVersion: rv}
	}
	if _, err := hex.Decode(ref.hash[:], []byte(digits)); err != nil || hex.EncodeToString(ref.hash[:]) != digits {
		return recordRef{other: name, resourceVersion: rv}
	}
	return ref
}

var _ source.SyncingSource = (*keyRecords)(nil)

func newKeyRecords(c client.WithWatch, keyUIDs func() []keyUID) *keyRecords {
	k := &keyRecords{client: c, keyUIDs: keyUIDs, byKey: map[digest][]recordRef{}}
	k.storeless = newStoreless("ApiKeyRecords", k.change, k.replaceWith)
	return k
}

// of returns the records of the ApiKey whose UID has the digest uid.
func (k *keyRecords) of(uid digest) []recordRef {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return slices.Clone(k.byKey[uid])
}

// takeListed returns, once, the record ref names as the first listing
// showed it, if the watch has shown nothing newer of it since.
func (k *keyRecords) takeListed(ref recordRef) *apikeysv1alpha1.ApiKeyRecord {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.firstListing.take(ref.name())
}

// dropListed forgets the records of the first listing whose key UID's
// digest unknown reports: no pass will take them.
func (k *keyRecords) dropListed(unknown func(digest) bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.firstListing.dropWhere(func(_ string, rec *apikeysv1alpha1.ApiKeyRecord) bool {
		return unknown(digestOf(rec.Spec.ApiKey.UID))
	})
}

// each calls f with the digest of every key UID that has records, and
// their names, under the read lock: f must not call back into k.
func (k *keyRecords) each(f func(digest, []recordRef)) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for uid, refs := range k.byKey {
		f(uid, refs)
	}
}

// Start runs the watch until ctx ends, waking keys through queue.
func (k *keyRecords) Start(ctx context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	k.queue = queue
	k.run(ctx, listWatch(k.client, &apikeysv1alpha1.ApiKeyRecordList{}, client.ListOptions{}), &apikeysv1alpha1.ApiKeyRecord{})
	return nil
}

// change takes a record added, changed or deleted: it updates the
// records of the record's key and wakes it. A record whose spec.apiKey was
// edited by hand stays listed under its former key too, until that key's
// pass reads it and drops it (see drop).
func (k *keyRecords) change(obj any, deleted bool) error {
	rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord)
	if !ok {
		return nil
	}
	uid := digestOf(rec.Spec.ApiKey.UID)
	k.mu.Lock()
	k.firstListing.drop(rec.Name)
	gone := refNamed(rec.Name, 0)
	refs := slices.DeleteFunc(k.byKey[uid], func(r recordRef) bool { return r.hash == gone.hash && r.other == gone.other })
	if !deleted {
		refs = append(refs, refOf(rec))
	}
	if len(refs) == 0 {
		delete(k.byKey, uid)
	} else {
		k.byKey[uid] = slices.Clip(refs)
	}
	k.mu.Unlock()
	if !deleted && k.seen != nil {
		k.seen(rec)
	}
	// The collector hears of every record, the controller's own included:
	// a key deleted before its new record showed up must not keep it.
	if !deleted && k.changed != nil {
		k.changed(rec)
	}
	own := k.own.caused(recordKind, "", rec.Name, rec.ResourceVersion)
	if deleted {
		own = k.own.ownDeleteSeen(rec.Name)
	}
	if own {
		return nil
	}
	k.queue.Add(reconcile.Request{NamespacedName: keyOfRecord(rec)})
	return nil
}

// drop forgets that the key whose UID has the digest uid has the record
// ref: a pass found it gone, or belonging to another key. Only ref as the
// pass read it: if the watch has shown the record since, the watch knows
// better.
func (k *keyRecords) drop(uid digest, ref recordRef) {
	k.mu.Lock()
	defer k.mu.Unlock()
	refs := slices.DeleteFunc(k.byKey[uid], func(r recordRef) bool { return r == ref })
	if len(refs) == 0 {
		delete(k.byKey, uid)
	} else {
		k.byKey[uid] = refs
	}
}

// replaceWith takes a listing: the first at start, later ones after the
// watch broke off. A later one wakes the keys whose records changed, came
// or went in between, and tells the collector of the records that changed;
// at start, every key is reconciled and the collector looks at every
// record anyway.
func (k *keyRecords) replaceWith(list []any, first bool) error {
	byKey := make(map[digest][]recordRef, len(list))
	recs := make([]*apikeysv1alpha1.ApiKeyRecord, 0, len(list))
	var listed map[string]*apikeysv1alpha1.ApiKeyRecord
	if first {
		listed = make(map[string]*apikeysv1alpha1.ApiKeyRecord, len(list))
	}
	for _, obj := range list {
		if rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord); ok {
			uid := digestOf(rec.Spec.ApiKey.UID)
			byKey[uid] = append(byKey[uid], refOf(rec))
			recs = append(recs, rec)
			if first {
				rec.ManagedFields = nil
				listed[rec.Name] = rec
			}
		}
	}
	k.mu.Lock()
	old := k.byKey
	k.byKey = byKey
	k.firstListing.fill(listed)
	k.mu.Unlock()
	if first {
		return nil
	}
	for _, rec := range recs {
		uid := digestOf(rec.Spec.ApiKey.UID)
		if !slices.Contains(old[uid], refOf(rec)) {
			k.queue.Add(reconcile.Request{NamespacedName: keyOfRecord(rec)})
			if k.changed != nil {
				k.changed(rec)
			}
		}
	}
	vanished := map[digest]bool{}
	for uid, refs := range old {
		for _, ref := range refs {
			if !slices.Contains(byKey[uid], ref) {
				vanished[uid] = true
			}
		}
	}
	wakeKeysWith(k.queue, k.keyUIDs, vanished)
	return nil
}

func refOf(rec *apikeysv1alpha1.ApiKeyRecord) recordRef {
	return refNamed(rec.Name, versionOf(rec.ResourceVersion))
}

// keyOfRecord names the ApiKey rec belongs to.
func keyOfRecord(rec *apikeysv1alpha1.ApiKeyRecord) types.NamespacedName {
	return types.NamespacedName{Namespace: shared.intern(rec.Spec.ApiKey.Namespace), Name: rec.Spec.ApiKey.Name}
}
