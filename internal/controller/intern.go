package controller

import (
	"encoding/binary"
	"strings"
	"sync"
)

// shared holds the namespaces the controller's watches keep, once each.
var shared = newStringTable()

// maxShared bounds the strings stringTable holds, and maxSharedBytes their
// bytes: values that never repeat, or a tenant's stream of new namespaces,
// must not grow it without end.
const (
	maxShared      = 4096
	maxSharedBytes = 4 << 20
)

// stringTable gives one copy of each string it is asked for, up to
// maxShared strings and maxSharedBytes in all (then the string it was
// given). Entries are never dropped; strings are immutable, so sharing
// them is safe.
type stringTable struct {
	mu      sync.RWMutex
	strings map[string]string
	bytes   int
}

func newStringTable() *stringTable { return &stringTable{strings: map[string]string{}} }

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

// listID names list unambiguously: each string preceded by its length.
func listID(list []string) string {
	var b []byte
	for _, s := range list {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return string(b)
}
