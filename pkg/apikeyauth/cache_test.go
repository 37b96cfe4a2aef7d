package apikeyauth

import (
	"slices"
	"testing"
	"time"
)

func TestScopeSet(t *testing.T) {
	same := [][]string{
		{"orders:read", "billing:*"},
		{"billing:*", "orders:read"},
		{"orders:read", "billing:*", "orders:read"},
	}
	want := newScopeSet(same[0])
	if !slices.Equal(want.list, []string{"billing:*", "orders:read"}) {
		t.Errorf("list = %q, want sorted and without duplicates", want.list)
	}
	for _, scopes := range same[1:] {
		if got := newScopeSet(scopes); got.key != want.key {
			t.Errorf("key of %q = %q, want %q as for %q", scopes, got.key, want.key, same[0])
		}
	}

	// Lists that differ never share a key, whatever their characters.
	different := [][2][]string{
		{nil, {""}},
		{{""}, {"", "a"}},
		{{"a", "b"}, {"ab"}},
		{{"a", "b"}, {"1:a1:b"}},
		{{"a", "1:b"}, {"a1:b"}},
	}
	for _, pair := range different {
		if a, b := newScopeSet(pair[0]), newScopeSet(pair[1]); a.key == b.key {
			t.Errorf("%q and %q share the key %q", pair[0], pair[1], a.key)
		}
	}
}

// TestAnswerCacheKeepsValidAnswers mounts a flood of made-up tokens, each
// rejected once, against a full cache of valid answers: none of those is
// evicted, and rejections make room for one another.
func TestAnswerCacheKeepsValidAnswers(t *testing.T) {
	now := time.Now()
	later := now.Add(time.Minute)
	key := func(b int) cacheKey { return cacheKey{tokenSum: [32]byte{byte(b), byte(b >> 8)}} }
	valid := &answer{identity: &Identity{Username: "apikey:team-orders:ci"}}
	c := newAnswerCache(4)
	c.put(key(1), valid, later, now)
	c.put(key(2), valid, later, now)
	c.put(key(3), &answer{code: CodeNotFound}, later, now)
	for b := 100; b < 1100; b++ {
		c.put(key(b), &answer{code: CodeMalformed}, later, now)
	}
	for b, want := range map[int]bool{1: true, 2: true, 3: false, 1098: true, 1099: true, 1097: false} {
		if _, ok := c.get(key(b), now); ok != want {
			t.Errorf("entry %d cached = %t, want %t", b, ok, want)
		}
	}
	if c.len() != 4 {
		t.Errorf("len = %d, want 4", c.len())
	}

	// Full of valid answers, a rejection is not stored; a valid answer
	// evicts the least recently used one.
	c.put(key(4), valid, later, now) // evicts one of the two rejections left
	c.put(key(5), valid, later, now) // and the other
	c.put(key(6), &answer{code: CodeNotFound}, later, now)
	if _, ok := c.get(key(6), now); ok {
		t.Error("a rejection evicted a valid answer")
	}
	c.get(key(2), now)
	c.put(key(7), valid, later, now) // evicts 1, the least recently used valid answer
	for b, want := range map[int]bool{1: false, 2: true, 4: true, 5: true, 7: true} {
		if _, ok := c.get(key(b), now); ok != want {
			t.Errorf("after filling with valid answers, entry %d cached = %t, want %t", b, ok, want)
		}
	}

	// Valid answers that have expired make room for a rejection.
	c.put(key(8), &answer{code: CodeNotFound}, later.Add(time.Minute), later)
	if _, ok := c.get(key(8), later); !ok {
		t.Error("a rejection was not stored though every valid answer had expired")
	}

	// An answer that changes kind moves lists.
	c.put(key(2), &answer{code: CodeSuspended}, later, now)
	if a, ok := c.get(key(2), now); !ok || a.code != CodeSuspended {
		t.Errorf("entry 2 = %+v, %t; want the new rejection", a, ok)
	}
	if c.len() != 4 {
		t.Errorf("len = %d, want 4", c.len())
	}
}

func TestAnswerCacheEvictsLeastRecentlyUsed(t *testing.T) {
	now := time.Now()
	later := now.Add(time.Minute)
	key := func(b byte) cacheKey { return cacheKey{tokenSum: [32]byte{b}} }
	c := newAnswerCache(2)

	c.put(key(1), &answer{code: CodeNotFound}, later, now)
	c.put(key(2), &answer{code: CodeNotFound}, later, now)
	if _, ok := c.get(key(1), now); !ok { // 1 is now the most recently used
		t.Fatal("entry 1 missing")
	}
	c.put(key(3), &answer{code: CodeNotFound}, later, now)

	for b, want := range map[byte]bool{1: true, 2: false, 3: true} {
		if _, ok := c.get(key(b), now); ok != want {
			t.Errorf("entry %d cached = %t, want %t", b, ok, want)
		}
	}
	if _, ok := c.get(key(1), later); ok {
		t.Error("entry 1 returned at its expiry")
	}
	if n := c.len(); n != 1 {
		t.Errorf("len = %d after an expired lookup, want 1", n)
	}
}
