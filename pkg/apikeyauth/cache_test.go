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

func TestAnswerCacheEvictsLeastRecentlyUsed(t *testing.T) {
	now := time.Now()
	later := now.Add(time.Minute)
	key := func(b byte) cacheKey { return cacheKey{tokenSum: [32]byte{b}} }
	c := newAnswerCache(2)

	c.put(key(1), &answer{code: CodeNotFound}, later)
	c.put(key(2), &answer{code: CodeNotFound}, later)
	if _, ok := c.get(key(1), now); !ok { // 1 is now the most recently used
		t.Fatal("entry 1 missing")
	}
	c.put(key(3), &answer{code: CodeNotFound}, later)

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
