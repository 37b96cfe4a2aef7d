package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// TokenHashScheme starts spec.tokenHash, which is followed by the token's
// SHA-256 in 64 lowercase hex digits. The CRD's pattern on spec.tokenHash
// spells the same form.
const TokenHashScheme = "sha256:"

// RecordNamePrefix starts every record's name; the rest is the token's
// SHA-256 in lowercase hex, so one token can only ever have one record.
const RecordNamePrefix = "sha256-"

// RecordName is the name of the record of the token whose SHA-256 is sum.
func RecordName(sum [sha256.Size]byte) string {
	return RecordNamePrefix + hex.EncodeToString(sum[:])
}

// RecordHash reverses RecordName. It accepts only the canonical form
// (lowercase hex), so equal hashes always have equal names.
func RecordHash(name string) ([sha256.Size]byte, bool) {
	var sum [sha256.Size]byte
	digits, ok := strings.CutPrefix(name, RecordNamePrefix)
	if !ok || len(digits) != hex.EncodedLen(len(sum)) || strings.ToLower(digits) != digits {
		return sum, false
	}
	_, err := hex.Decode(sum[:], []byte(digits))
	return sum, err == nil
}
