package token

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"unsafe"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// hashScheme prefixes the stored form so that the algorithm can change later.
const hashScheme = apikeysv1alpha1.TokenHashScheme

// ErrHashFormat means a stored hash is not "sha256:" followed by 64
// lowercase hex digits.
var ErrHashFormat = errors.New("token hash must be \"sha256:\" followed by 64 lowercase hex digits")

// Sum returns the SHA-256 of the whole token string: the raw form of Hash,
// for comparing against stored hashes on the request path. It neither
// allocates nor copies tok.
func Sum(tok string) [sha256.Size]byte {
	// []byte(tok) would copy the token, onto the heap past 32 bytes. SHA-256
	// only reads its input and keeps none of it, so it may read the string's
	// own bytes.
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))
}

// Hash returns the form in which a token is stored: "sha256:" followed by
// the lowercase hex SHA-256 of the whole token string.
func Hash(tok string) string {
	return FormatHash(Sum(tok))
}

// FormatHash returns sum in the stored "sha256:<lowercase hex>" form.
func FormatHash(sum [sha256.Size]byte) string {
	var b [len(hashScheme) + 2*sha256.Size]byte
	copy(b[:], hashScheme)
	hex.Encode(b[len(hashScheme):], sum[:])
	return string(b[:])
}

// ParseHash is the inverse of FormatHash. Only the canonical form is
// accepted (lowercase hex), so equal hashes are always equal strings.
func ParseHash(s string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if len(s) != len(hashScheme)+2*sha256.Size || s[:len(hashScheme)] != hashScheme {
		return sum, ErrHashFormat
	}
	h := s[len(hashScheme):]
	for i := range sha256.Size {
		hi, ok1 := hexValue(h[2*i])
		lo, ok2 := hexValue(h[2*i+1])
		if !ok1 || !ok2 {
			return [sha256.Size]byte{}, ErrHashFormat
		}
		sum[i] = hi<<4 | lo
	}
	return sum, nil
}

// hexValue decodes one lowercase hex digit.
func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// fingerprintDomain separates fingerprints from the stored hash: a
// fingerprint is no prefix of the record's hash, so showing it to tenants
// reveals nothing of the record.
const fingerprintDomain = "apikeys.dev/fingerprint:"

// Fingerprint identifies tok to someone who holds it, without revealing the
// hash kept at rest: the first 16 hex digits of SHA-256 over
// "apikeys.dev/fingerprint:" and tok. kubectl apikey get-token compares it
// with the key's status before it prints a token read from a Secret.
func Fingerprint(tok string) string {
	sum := sha256.Sum256([]byte(fingerprintDomain + tok))
	return hex.EncodeToString(sum[:8])
}
