package apikeyauth

import (
	"hash/crc32"
	"strings"
	"testing"
)

// signedToken is prefix_body with its checksum, body padded with '0' to the
// body's length: a well-formed token no operator issued.
func signedToken(prefix, body string) string {
	signed := prefix + "_" + body + strings.Repeat("0", bodyLength-len(body))
	var digits [checksumLength]byte
	v := uint64(crc32.ChecksumIEEE([]byte(signed)))
	for i := checksumLength - 1; i >= 0; i-- {
		digits[i] = base62[v%62]
		v /= 62
	}
	return signed + string(digits[:])
}

func TestWellFormed(t *testing.T) {
	good := signedToken("ak", "madeUpForAFakeServer")
	flip := func(s string, i int) string {
		b := []byte(s)
		b[i] = map[bool]byte{true: 'B', false: 'A'}[b[i] == 'A']
		return string(b)
	}
	for _, tt := range []struct {
		name  string
		token string
		want  bool
	}{
		{"well-formed", good, true},
		{"a prefix with '_' (Rushomon's ro_pat)", signedToken("ro_pat", "x"), true},
		{"the longest prefix", signedToken(strings.Repeat("p", maxPrefix), "x"), true},
		{"empty", "", false},
		{"no separator", strings.TrimPrefix(good, "ak_"), false},
		{"a one-letter prefix", signedToken("a", "x"), false},
		{"a prefix too long", signedToken(strings.Repeat("p", maxPrefix+1), "x"), false},
		{"a prefix starting with a digit", signedToken("1k", "x"), false},
		{"a prefix ending in '_'", signedToken("ak_", "x"), false},
		{"an upper-case prefix", signedToken("AK", "x"), false},
		{"a body character mistyped", flip(good, 5), false},
		{"a checksum character mistyped", flip(good, len(good)-1), false},
		{"one character short", good[:len(good)-1], false},
		{"one character more", good + "0", false},
		{"a character outside base62", good[:10] + "-" + good[11:], false},
		{"non-ASCII", good[:10] + "é" + good[12:], false},
		{"trailing newline", good + "\n", false},
		{"Bearer included", "Bearer " + good, false},
		{"huge", strings.Repeat(good, 1000), false},
	} {
		if got := WellFormed(tt.token); got != tt.want {
			t.Errorf("%s: WellFormed = %v, want %v", tt.name, got, tt.want)
		}
	}
}
