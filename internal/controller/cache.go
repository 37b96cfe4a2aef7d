package controller

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// CacheOptions trims what the controller caches to what it reads, since a
// manager holds every ApiKey and record in memory:
//
//   - ApiKeys without managed fields, labels, owner references, foreign
//     annotations (kubectl's last-applied-configuration repeats the whole
//     spec) or spec.description;
//   - records without managed fields, labels, annotations, owner
//     references or finalizers (the controller finds a key's records by
//     their spec.apiKey.uid, not by label), nor the token hash
//     their names already hold.
//
// It caches no Secret: a watch of the delivered Secrets' metadata keeps
// two digests of each (deliveredSecrets).
//
// Every patch the controller computes from a cached object leaves these
// fields alone: they are missing from both sides of the diff. The strings
// many objects repeat (namespaces, scopes, groups, condition types and
// reasons) are held once. The auth server does not read this cache: its
// index keeps its own, smaller copy.
func CacheOptions() map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{
		&apikeysv1alpha1.ApiKey{}:       {Transform: trimApiKey},
		&apikeysv1alpha1.ApiKeyRecord{}: {Transform: trimRecord},
	}
}

// trimApiKey keeps what the controller reads of an ApiKey: identity,
// generation, timestamps, finalizers, the apikeys.dev annotations, the spec
// but its description, and the whole status, which the status patch is
// computed against.
func trimApiKey(obj any) (any, error) {
	key, ok := obj.(*apikeysv1alpha1.ApiKey)
	if !ok {
		return obj, nil
	}
	spec := key.Spec
	spec.Description = ""
	spec.Identity = apikeysv1alpha1.Identity(shared.intern(string(spec.Identity)))
	spec.Prefix = shared.intern(spec.Prefix)
	spec.Scopes = shared.internList(spec.Scopes)
	spec.Audiences = shared.internList(spec.Audiences)
	if spec.Owner != nil {
		spec.Owner = shared.internOwner(spec.Owner)
	}
	status := key.Status
	status.Conditions = slices.Clone(status.Conditions)
	for i := range status.Conditions {
		c := &status.Conditions[i]
		c.Type, c.Reason = shared.intern(c.Type), shared.intern(c.Reason)
		c.Status = metav1.ConditionStatus(shared.intern(string(c.Status)))
	}
	return &apikeysv1alpha1.ApiKey{
		TypeMeta: sharedTypeMeta(key.TypeMeta),
		ObjectMeta: metav1.ObjectMeta{
			Name: key.Name, Namespace: shared.intern(key.Namespace), UID: key.UID, ResourceVersion: key.ResourceVersion,
			Generation: key.Generation, CreationTimestamp: key.CreationTimestamp, DeletionTimestamp: key.DeletionTimestamp,
			Finalizers:  shared.internList(key.Finalizers),
			Annotations: ours(key.Annotations),
		},
		Spec:   spec,
		Status: status,
	}, nil
}

// trimRecord keeps what the controller reads of a record: identity, the
// spec (compared whole with what it should be) and the status's
// lastUsedAt. Not its labels: a key's records are found by their
// spec.apiKey.uid (keyRecords), and a one-entry map would cost a record
// about 300 bytes. Nor spec.tokenHash when the record's name holds it, as every
// name the controller gives does: the controller reads records through
// withTokenHash, which restores it.
func trimRecord(obj any) (any, error) {
	rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord)
	if !ok {
		return obj, nil
	}
	spec := rec.Spec
	if digits, ok := strings.CutPrefix(rec.Name, apikeysv1alpha1.RecordNamePrefix); ok &&
		spec.TokenHash == apikeysv1alpha1.TokenHashScheme+digits {
		spec.TokenHash = "" // the name holds it; withTokenHash restores it
	}
	spec.ApiKey.Namespace = shared.intern(spec.ApiKey.Namespace)
	if spec.UID == spec.ApiKey.UID {
		spec.UID = spec.ApiKey.UID // identity Key: one string, not two
	}
	spec.Groups = shared.internList(spec.Groups)
	spec.Scopes = shared.internList(spec.Scopes)
	spec.Audiences = shared.internList(spec.Audiences)
	return &apikeysv1alpha1.ApiKeyRecord{
		TypeMeta: sharedTypeMeta(rec.TypeMeta),
		ObjectMeta: metav1.ObjectMeta{
			Name: rec.Name, UID: rec.UID, ResourceVersion: rec.ResourceVersion, Generation: rec.Generation,
			CreationTimestamp: rec.CreationTimestamp, DeletionTimestamp: rec.DeletionTimestamp,
		},
		Spec:   spec,
		Status: apikeysv1alpha1.ApiKeyRecordStatus{LastUsedAt: rec.Status.LastUsedAt},
	}, nil
}

// ours keeps the apikeys.dev/ entries of a metadata map.
func ours(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(k, "apikeys.dev/") {
			if out == nil {
				out = map[string]string{}
			}
			out[shared.intern(k)] = v
		}
	}
	return out
}

func sharedTypeMeta(tm metav1.TypeMeta) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: shared.intern(tm.APIVersion), Kind: shared.intern(tm.Kind)}
}

// shared holds the strings and string lists that many cached objects
// repeat.
var shared = newStringTable()

// maxShared bounds the strings, the lists and the owners stringTable
// holds, and maxSharedBytes their bytes, all kinds together: values that
// never repeat, or a tenant's stream of new ones (a scope list edited over
// and over, long group names), must not grow it without end.
const (
	maxShared      = 4096
	maxSharedBytes = 4 << 20
)

// stringTable gives one copy of each string it is asked for, and of each
// list and owner, up to maxShared of each and maxSharedBytes in all (then a
// copy of what was given). Entries
// are never dropped. Strings are immutable, so sharing them is safe; a
// shared list is safe because cached objects are never written to (the
// cache hands out deep copies, and the readers that skip the copy only
// read).
type stringTable struct {
	mu      sync.RWMutex
	strings map[string]string
	lists   map[string][]string               // by listID
	owners  map[string]*apikeysv1alpha1.Owner // by listID of username, UID and groups
	bytes   int                               // what the three hold, about
}

func newStringTable() *stringTable {
	return &stringTable{strings: map[string]string{}, lists: map[string][]string{},
		owners: map[string]*apikeysv1alpha1.Owner{}}
}

func (t *stringTable) intern(s string) string {
	if s == "" {
		return s
	}
	t.mu.RLock()
	v, ok := t.strings[s]
	t.mu.RUnlock()
	if ok {
		return v
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.strings[s]; ok {
		return v
	}
	if len(t.strings) >= maxShared || t.bytes+len(s) > maxSharedBytes {
		return s
	}
	s = strings.Clone(s)
	t.strings[s] = s
	t.bytes += len(s)
	return s
}

// internAll returns a copy of list with every string interned. It never
// writes into list: a transform must not change the object it is given.
func (t *stringTable) internAll(list []string) []string {
	if list == nil {
		return nil
	}
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = t.intern(s)
	}
	return out
}

// internList returns the one copy of list the table shares (its strings
// interned, its capacity its length, so that an append copies), or, past
// maxShared lists, a copy of its own. Nil and empty lists come back as
// they are.
func (t *stringTable) internList(list []string) []string {
	if len(list) == 0 {
		return list
	}
	return share(t, t.lists, listID(list), func() []string { return slices.Clip(t.internAll(list)) })
}

// internOwner returns the one copy of o the table shares (a person owns
// many keys), or, past maxShared owners, a copy of its own.
func (t *stringTable) internOwner(o *apikeysv1alpha1.Owner) *apikeysv1alpha1.Owner {
	id := listID([]string{o.Username, o.UID, strconv.FormatBool(o.Groups == nil)}) + listID(o.Groups)
	return share(t, t.owners, id, func() *apikeysv1alpha1.Owner {
		return &apikeysv1alpha1.Owner{Username: t.intern(o.Username), UID: o.UID, Groups: t.internList(o.Groups)}
	})
}

// share returns the value m holds under id, or makes one and, below
// maxShared values and maxSharedBytes, keeps it there (counted as twice its
// id: the id itself, and about as much in the value).
func share[V any](t *stringTable, m map[string]V, id string, makeValue func() V) V {
	t.mu.RLock()
	v, ok := m[id]
	t.mu.RUnlock()
	if ok {
		return v
	}
	v = makeValue()
	t.mu.Lock()
	defer t.mu.Unlock()
	if prev, ok := m[id]; ok {
		return prev
	}
	if cost := 2 * len(id); len(m) < maxShared && t.bytes+cost <= maxSharedBytes {
		m[id] = v
		t.bytes += cost
	}
	return v
}

// listID names list unambiguously: each string preceded by its length.
func listID(list []string) string {
	var b []byte
	for _, s := range list {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return string(b)
}
