// Package token defines the API-key token format: how keys are generated,
// recognised, checked for typos and hashed for storage.
//
// A token looks like
//
//	<prefix>_<body><checksum>      e.g. ak_<43 chars><6 chars>
//
// where:
//
//   - prefix is 2–16 characters of [a-z0-9_], starts with a letter and does
//     not end in '_' (an ApiKey's default is "ak"). Because a prefix may
//     itself contain '_' (for example "ro_pat"), a token is split at its
//     LAST '_'.
//   - body is BodyLength (43) base62 characters (alphabet 0-9A-Za-z) drawn
//     from crypto/rand by rejection sampling, so every character is uniform
//     and the body carries 43·log2(62) ≈ 256.03 bits of entropy.
//   - checksum is ChecksumLength (6) base62 characters: the CRC-32 (IEEE) of
//     everything before it, i.e. of the bytes of prefix + "_" + body, written
//     most significant digit first and left-padded with '0'.
//
// The checksum is not a security feature. It lets secret scanners recognise
// a token with almost no false positives, and lets a server reject a
// mistyped, truncated or foreign token without a database lookup.
//
// Tokens are secrets: they are stored only as Hash ("sha256:<hex>" of the
// whole token string), shown to humans only as Hint, and no error returned
// by this package ever contains any part of its input.
package token

import (
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unsafe"
)

const (
	// BodyLength is the number of base62 characters in a token body; 62^43 > 2^256.
	BodyLength = 43
	// ChecksumLength is the number of base62 characters of the trailing
	// checksum; 62^6 > 2^32, so any CRC-32 fits.
	ChecksumLength = 6
	// MaxPrefixLength is the longest prefix ValidPrefix accepts.
	MaxPrefixLength = 16
	// MinPrefixLength is the shortest prefix ValidPrefix accepts.
	MinPrefixLength = 2
	// MaxLength is the length of the longest well-formed token. Anything
	// longer is rejected by Parse before it is scanned.
	MaxLength = MaxPrefixLength + 1 + BodyLength + ChecksumLength
)

const (
	base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// tailLength is what follows the last '_': body and checksum.
	tailLength = BodyLength + ChecksumLength
	// hintBodyChars is how much of the body Hint reveals (~24 of 256 bits).
	hintBodyChars = 4
	// ellipsis marks a Hint as truncated.
	ellipsis = "…"
)

// base62Value maps a byte to its base62 digit value, or 0xff if the byte is
// not in the alphabet (which includes every non-ASCII byte).
var base62Value = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := range len(base62Alphabet) {
		t[base62Alphabet[i]] = byte(i)
	}
	return t
}()

// ErrPrefix is wrapped by every error from ValidPrefix and Generate about
// the prefix; the wrapping error says what to change.
var ErrPrefix = errors.New("invalid token prefix")

var (
	errPrefixLength = fmt.Errorf("%w: must be %d to %d characters long", ErrPrefix, MinPrefixLength, MaxPrefixLength)
	errPrefixChars  = fmt.Errorf("%w: may contain only lowercase letters a-z, digits 0-9 and '_'", ErrPrefix)
	errPrefixStart  = fmt.Errorf("%w: must start with a lowercase letter a-z", ErrPrefix)
	errPrefixEnd    = fmt.Errorf("%w: must not end with '_'", ErrPrefix)
)

// ErrMalformed is matched (errors.Is) by every Parse error except
// ErrChecksum: the input does not have the shape of a token at all.
var ErrMalformed = errors.New("malformed token")

// ErrChecksum means the input has the shape of a token but its checksum does
// not match: it was mistyped, altered, or issued by another system.
var ErrChecksum = errors.New("token checksum mismatch: the token is mistyped or was not issued here")

// Parse errors are fixed values so that they can never carry token bytes
// into logs, and so that rejecting garbage does not allocate.
var (
	errEmpty       = fmt.Errorf("%w: empty", ErrMalformed)
	errTooLong     = fmt.Errorf("%w: longer than %d characters", ErrMalformed, MaxLength)
	errNoSeparator = fmt.Errorf("%w: no '_' between prefix and body", ErrMalformed)
	errBadPrefix   = fmt.Errorf("%w: prefix must be %d-%d characters of a-z, 0-9 and '_', start with a letter and not end with '_'",
		ErrMalformed, MinPrefixLength, MaxPrefixLength)
	errTailLength = fmt.Errorf("%w: want exactly %d characters after the last '_'", ErrMalformed, tailLength)
	errTailChars  = fmt.Errorf("%w: only base62 characters 0-9, A-Z, a-z may follow the last '_'", ErrMalformed)
)

// ValidPrefix reports whether p can be used as a token prefix. The error
// explains what to change; it does not repeat p, so callers should add
// their own context (for example the configuration field).
func ValidPrefix(p string) error {
	if len(p) < MinPrefixLength || len(p) > MaxPrefixLength {
		return errPrefixLength
	}
	for i := range len(p) {
		c := p[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return errPrefixChars
		}
	}
	if p[0] < 'a' || p[0] > 'z' {
		return errPrefixStart
	}
	if p[len(p)-1] == '_' {
		return errPrefixEnd
	}
	return nil
}

// Generate returns a new token with the given prefix, using crypto/rand.
// It fails only if the prefix is invalid (the error wraps ErrPrefix) or the
// system's random source fails.
func Generate(prefix string) (string, error) {
	return generate(rand.Reader, prefix)
}

// generate is Generate with an injectable source of randomness for tests.
func generate(r io.Reader, prefix string) (string, error) {
	if err := ValidPrefix(prefix); err != nil {
		return "", err
	}
	var out [MaxLength]byte
	tok := append(out[:0], prefix...)
	tok = append(tok, '_')

	// Rejection sampling: 248 = 4·62, so b%62 is uniform for b < 248.
	// About 3% of bytes are rejected; 64 bytes almost always suffice.
	var rnd [64]byte
	for n := 0; n < BodyLength; {
		if _, err := io.ReadFull(r, rnd[:]); err != nil {
			return "", fmt.Errorf("token: reading random bytes: %w", err)
		}
		for _, b := range rnd {
			if b >= 248 {
				continue
			}
			tok = append(tok, base62Alphabet[b%62])
			if n++; n == BodyLength {
				break
			}
		}
	}
	tok = appendChecksum(tok, crc(string(tok)))
	return string(tok), nil
}

// Parts are the components of a parsed token; both fields are substrings
// of the parsed token.
type Parts struct {
	Prefix string
	// Body is the secret part of the token.
	Body string
}

// String returns the Hint form, so that printing Parts with %v or %s never
// reveals the secret body.
func (p Parts) String() string {
	return p.Prefix + "_" + p.Body[:min(hintBodyChars, len(p.Body))] + ellipsis
}

// GoString is like String, so %#v does not reveal the body either.
func (p Parts) GoString() string { return p.String() }

// Parse checks that tok is a well-formed token with a correct checksum and
// returns its parts, which share memory with tok. It does not allocate.
//
// A failed checksum returns ErrChecksum; every other failure matches
// ErrMalformed. Error messages never contain any part of tok.
func Parse(tok string) (Parts, error) {
	// Length first, so that arbitrarily large inputs are rejected in O(1).
	if len(tok) == 0 {
		return Parts{}, errEmpty
	}
	if len(tok) > MaxLength {
		return Parts{}, errTooLong
	}
	// A multi-byte UTF-8 sequence never contains the byte '_', and every
	// non-ASCII byte fails the character checks below, so byte-wise
	// scanning also rejects non-ASCII and invalid UTF-8.
	sep := strings.LastIndexByte(tok, '_')
	if sep < 0 {
		return Parts{}, errNoSeparator
	}
	prefix, tail := tok[:sep], tok[sep+1:]
	if ValidPrefix(prefix) != nil {
		return Parts{}, errBadPrefix
	}
	if len(tail) != tailLength {
		return Parts{}, errTailLength
	}
	for i := range BodyLength {
		if base62Value[tail[i]] == 0xff {
			return Parts{}, errTailChars
		}
	}
	// The fixed-width base62 checksum has exactly one spelling per value,
	// so comparing decoded values is the same as comparing strings.
	var sum uint64
	for i := BodyLength; i < tailLength; i++ {
		d := base62Value[tail[i]]
		if d == 0xff {
			return Parts{}, errTailChars
		}
		sum = sum*62 + uint64(d)
	}
	if sum != uint64(crc(tok[:sep+1+BodyLength])) {
		return Parts{}, ErrChecksum
	}
	return Parts{Prefix: prefix, Body: tail[:BodyLength]}, nil
}

// Checksum returns the ChecksumLength-character checksum that follows
// prefixAndBody (which must include the '_', i.e. everything before the
// checksum) in a token.
func Checksum(prefixAndBody string) string {
	var b [ChecksumLength]byte
	return string(appendChecksum(b[:0], crc(prefixAndBody)))
}

// appendChecksum appends sum as ChecksumLength base62 digits, most
// significant first, zero-padded.
func appendChecksum(dst []byte, sum uint32) []byte {
	var b [ChecksumLength]byte
	v := uint64(sum)
	for i := ChecksumLength - 1; i >= 0; i-- {
		b[i] = base62Alphabet[v%62]
		v /= 62
	}
	return append(dst, b[:]...)
}

// crc is crc32.ChecksumIEEE over a string. Converting to []byte would copy
// the token (onto the heap, as the bytes escape into assembly), so it hands
// over the string's own bytes, which the checksum only reads. It is on the
// path of every refused token.
func crc(s string) uint32 {
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// Hint returns a human-readable reminder of which token this is, e.g.
// "ak_7Qz4…": the prefix, '_', the first 4 body characters and a U+2026
// ellipsis. It reveals about 24 of the body's 256 bits. It returns "" if
// tok does not parse, so it never echoes a mistyped secret.
func Hint(tok string) string {
	p, err := Parse(tok)
	if err != nil {
		return ""
	}
	return p.String()
}
