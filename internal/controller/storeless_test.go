package controller

import "testing"

// TestStashShrinks checks that a first listing's stash moves into smaller
// maps as it is taken and lets its map go once empty: a map keeps the size
// of its peak, and this one starts with every object of a kind.
func TestStashShrinks(t *testing.T) {
	var s stash[int, string]
	full := map[int]string{}
	for i := range 1000 {
		full[i] = "object"
	}
	s.fill(full)
	for i := range 750 {
		if got := s.take(i); got != "object" {
			t.Fatalf("take(%d) = %q", i, got)
		}
	}
	if s.size != 250 || len(s.m) != 250 {
		t.Errorf("after taking three quarters: a map made for %d holding %d, want a new one made for 250", s.size, len(s.m))
	}
	if got := s.take(3); got != "" {
		t.Errorf("take of a taken object = %q", got)
	}
	s.dropWhere(func(k int, _ string) bool { return k%2 == 0 })
	for i := 751; i < 1000; i += 2 {
		s.drop(i)
	}
	if s.m != nil || s.size != 0 {
		t.Errorf("an empty stash keeps a map of %d", s.size)
	}
}
