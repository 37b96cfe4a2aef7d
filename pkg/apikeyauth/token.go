package apikeyauth

import (
	"hash/crc32"
	"strings"
)

// The operator's token format: prefix_bodychecksum, where prefix is 2 to 16
// of a-z, 0-9 and '_' (a letter first, no '_' last), body 43 base62
// characters and checksum the CRC-32 (IEEE) of everything before it, as 6
// base62 digits. The operator's own parser (internal/token) is the source;
// test/apikeyauth holds WellFormed to it on any input.
const (
	bodyLength     = 43
	checksumLength = 6
	minPrefix      = 2
	maxPrefix      = 16
	base62         = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// WellFormed reports whether token has the form of a token the operator
// mints, checksum included. A token that is not cannot be valid, so Verify
// refuses it as MALFORMED without asking the auth server: requests with
// made-up tokens cost the auth server nothing. Anyone can compute a
// checksum, so a well-formed token proves nothing until the auth server
// answers for it.
func WellFormed(token string) bool {
	sep := strings.LastIndexByte(token, '_')
	if sep < 0 || !validPrefix(token[:sep]) || len(token)-sep-1 != bodyLength+checksumLength {
		return false
	}
	signed := sep + 1 + bodyLength
	if !isBase62(token[sep+1 : signed]) {
		return false
	}
	var sum uint64
	for i := signed; i < len(token); i++ {
		d := strings.IndexByte(base62, token[i])
		if d < 0 {
			return false
		}
		sum = sum*62 + uint64(d)
	}
	return sum == uint64(crc32.ChecksumIEEE([]byte(token[:signed])))
}

// validPrefix reports whether p is 2 to 16 of a-z, 0-9 and '_', a letter
// first and no '_' last.
func validPrefix(p string) bool {
	if len(p) < minPrefix || len(p) > maxPrefix || p[0] < 'a' || p[0] > 'z' || p[len(p)-1] == '_' {
		return false
	}
	for i := range len(p) {
		if c := p[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// isBase62 reports whether every byte of s is a base62 digit.
func isBase62(s string) bool {
	for i := range len(s) {
		if strings.IndexByte(base62, s[i]) < 0 {
			return false
		}
	}
	return true
}
