package token

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// Known vectors, computed independently (Python zlib.crc32, hashlib.sha256).
const (
	testBody     = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"
	akToken      = "ak_" + testBody + "1UI0KZ"
	roPatToken   = "ro_pat_" + testBody + "2hoS2H"
	akTokenHash  = "sha256:7e1201afe7754f034d75667a1ea3bbd0f876c76e19a157597101e53bd447c9ed"
	paddedToken  = "ak_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcde74" + "00cAMa" // CRC 9096304 < 62^4
	noSepCRCTok  = "ak_" + testBody + "2mctWp"                                 // checksum over "ak"+body, the rejected definition
	prefix16     = "abcdefghij0123_z"
	base62Digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// mk builds a token with a correct checksum from arbitrary parts, so that
// tests can isolate one defect at a time.
func mk(prefix, body string) string {
	return prefix + "_" + body + Checksum(prefix+"_"+body)
}

// countingReader yields 0, 1, 2, ... 255, 0, ... so generated bodies are
// predictable.
type countingReader struct{ n byte }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.n
		r.n++
	}
	return len(p), nil
}

// staticErrors are all errors Parse may return. Being fixed values, they
// cannot contain any part of the input.
var staticErrors = []error{errEmpty, errTooLong, errNoSeparator, errBadPrefix, errTailLength, errTailChars, ErrChecksum}

func isStaticError(err error) bool {
	for _, e := range staticErrors {
		if err == e {
			return true
		}
	}
	return false
}

func TestChecksumKnownVectors(t *testing.T) {
	for _, tok := range []string{akToken, roPatToken, paddedToken} {
		before, sum := tok[:len(tok)-ChecksumLength], tok[len(tok)-ChecksumLength:]
		if got := Checksum(before); got != sum {
			t.Errorf("Checksum(%q) = %q, want %q", before, got, sum)
		}
		if got, want := crc(before), crc32.ChecksumIEEE([]byte(before)); got != want {
			t.Errorf("crc(%q) = %#x, hash/crc32 says %#x", before, got, want)
		}
	}
	if got := Checksum(""); got != "000000" {
		t.Errorf(`Checksum("") = %q, want "000000"`, got)
	}
	// Largest CRC-32 value must still fit in 6 digits.
	if got := string(appendChecksum(nil, ^uint32(0))); got != "4gfFC3" {
		t.Errorf("appendChecksum(0xffffffff) = %q, want 4gfFC3", got)
	}
}

func TestParse(t *testing.T) {
	huge := strings.Repeat("a", 1<<20)
	tests := []struct {
		name    string
		tok     string
		want    Parts
		wantErr error
	}{
		{"ak", akToken, Parts{"ak", testBody}, nil},
		{"ro_pat split at last underscore", roPatToken, Parts{"ro_pat", testBody}, nil},
		{"zero-padded checksum", paddedToken, Parts{"ak", paddedToken[3:46]}, nil},
		{"two-char prefix", mk("x9", testBody), Parts{"x9", testBody}, nil},
		{"max length", mk(prefix16, testBody), Parts{prefix16, testBody}, nil},

		{"empty", "", Parts{}, errEmpty},
		{"one over max length", strings.Repeat("a", MaxLength+1), Parts{}, errTooLong},
		{"huge", huge, Parts{}, errTooLong},
		{"17-char prefix", mk(prefix16+"x", testBody), Parts{}, errTooLong},
		{"no separator", "ak" + testBody + "1UI0KZ", Parts{}, errNoSeparator},
		{"uppercase prefix", mk("Ak", testBody), Parts{}, errBadPrefix},
		{"one-char prefix", mk("a", testBody), Parts{}, errBadPrefix},
		{"empty prefix", mk("", testBody), Parts{}, errBadPrefix},
		{"prefix starts with digit", mk("1ab", testBody), Parts{}, errBadPrefix},
		{"prefix ends with underscore", mk("ab_", testBody), Parts{}, errBadPrefix},
		{"prefix with dash", mk("a-b", testBody), Parts{}, errBadPrefix},
		{"non-ASCII prefix", mk("ké", testBody), Parts{}, errBadPrefix},
		{"body too short", mk("ak", testBody[:42]), Parts{}, errTailLength},
		{"body too long", mk("ak", testBody+"h"), Parts{}, errTailLength},
		{"checksum missing", "ak_" + testBody, Parts{}, errTailLength},
		{"trailing newline", akToken + "\n", Parts{}, errTailLength},
		{"trailing underscore", akToken + "_", Parts{}, errBadPrefix},
		{"body with dash", mk("ak", testBody[:42]+"-"), Parts{}, errTailChars},
		{"body with NUL", mk("ak", "\x00"+testBody[1:]), Parts{}, errTailChars},
		{"non-ASCII body", mk("ak", "é"+testBody[2:]), Parts{}, errTailChars},
		{"invalid UTF-8 body", mk("ak", "\xff"+testBody[1:]), Parts{}, errTailChars},
		{"checksum with dash", akToken[:len(akToken)-1] + "-", Parts{}, errTailChars},
		{"wrong checksum", akToken[:len(akToken)-1] + "Y", Parts{}, ErrChecksum},
		{"checksum from another prefix", "ak_" + testBody + "2hoS2H", Parts{}, ErrChecksum},
		{"checksum without separator", noSepCRCTok, Parts{}, ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.tok)
			if err != tt.wantErr {
				t.Fatalf("Parse() error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Parse() = %+v, want %+v", [2]string{got.Prefix, got.Body}, [2]string{tt.want.Prefix, tt.want.Body})
			}
			if err == nil {
				return
			}
			wantMalformed := err != ErrChecksum
			if errors.Is(err, ErrMalformed) != wantMalformed {
				t.Errorf("errors.Is(%v, ErrMalformed) = %v, want %v", err, !wantMalformed, wantMalformed)
			}
		})
	}
}

func TestParseErrorsDoNotLeakToken(t *testing.T) {
	// Every rejection, including ones made from a real random token.
	real, err := Generate("ro_pat")
	if err != nil {
		t.Fatal(err)
	}
	realBody := real[len("ro_pat_") : len("ro_pat_")+BodyLength]
	inputs := []string{
		real[:len(real)-1] + flip(real[len(real)-1]), // checksum mismatch
		real[:10] + flip(real[10]) + real[11:],       // body typo
		real + "\n",
		real[:len(real)-1],
		strings.ReplaceAll(real, "_", ""),
		"Ro_pat" + real[len("ro_pat"):],
		real + real,
		strings.Replace(real, real[20:21], "é", 1),
		"",
	}
	for _, in := range inputs {
		_, err := Parse(in)
		if err == nil {
			t.Fatalf("Parse accepted a corrupted token")
		}
		if !isStaticError(err) {
			t.Errorf("Parse error %q is not one of the fixed errors", err)
		}
		msg := err.Error()
		for _, secret := range []string{in, real, realBody, realBody[:8], realBody[len(realBody)-8:]} {
			if secret != "" && strings.Contains(msg, secret) {
				t.Errorf("error %q contains part of the token", msg)
			}
		}
	}
}

// flip returns a different base62 character than c.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestSingleCharacterChangeFailsChecksum(t *testing.T) {
	for _, tok := range []string{akToken, roPatToken, paddedToken} {
		sep := strings.LastIndexByte(tok, '_')
		// Every substitution of one base62 character in body or checksum.
		for i := sep + 1; i < len(tok); i++ {
			for j := range len(base62Digits) {
				c := base62Digits[j]
				if c == tok[i] {
					continue
				}
				typo := tok[:i] + string(c) + tok[i+1:]
				if _, err := Parse(typo); err != ErrChecksum {
					t.Fatalf("changing position %d of %q to %q: err = %v, want ErrChecksum", i, tok, c, err)
				}
			}
		}
		// Every adjacent transposition in body or checksum.
		for i := sep + 1; i+1 < len(tok); i++ {
			if tok[i] == tok[i+1] {
				continue
			}
			swapped := tok[:i] + string(tok[i+1]) + string(tok[i]) + tok[i+2:]
			if _, err := Parse(swapped); err != ErrChecksum {
				t.Fatalf("swapping positions %d,%d of %q: err = %v, want ErrChecksum", i, i+1, tok, err)
			}
		}
		// A different but valid prefix is also caught.
		other := "x" + tok[1:]
		if _, err := Parse(other); err != ErrChecksum {
			t.Errorf("Parse(%q) err = %v, want ErrChecksum", other, err)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		want   error
	}{
		{"ak", nil},
		{"ro_pat", nil},
		{"a1", nil},
		{"a_b_c", nil},
		{prefix16, nil},
		{"", errPrefixLength},
		{"a", errPrefixLength},
		{prefix16 + "x", errPrefixLength},
		{"Ak", errPrefixChars},
		{"a-b", errPrefixChars},
		{"a b", errPrefixChars},
		{"ké", errPrefixChars},
		{"1ab", errPrefixStart},
		{"_ab", errPrefixStart},
		{"ab_", errPrefixEnd},
	}
	for _, tt := range tests {
		err := ValidPrefix(tt.prefix)
		if err != tt.want {
			t.Errorf("ValidPrefix(%q) = %v, want %v", tt.prefix, err, tt.want)
		}
		if err != nil && !errors.Is(err, ErrPrefix) {
			t.Errorf("ValidPrefix(%q) error does not match ErrPrefix", tt.prefix)
		}
	}
	if ValidPrefix(apikeysv1alpha1.DefaultPrefix) != nil {
		t.Error("apikeysv1alpha1.DefaultPrefix is not valid")
	}
}

func TestGenerate(t *testing.T) {
	const n = 1000
	seen := make(map[string]bool, n)
	for range n {
		tok, err := Generate(apikeysv1alpha1.DefaultPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok] {
			t.Fatal("Generate returned a duplicate token")
		}
		seen[tok] = true
		p, err := Parse(tok)
		if err != nil {
			t.Fatalf("Parse(Generate()) error: %v", err)
		}
		if p.Prefix != apikeysv1alpha1.DefaultPrefix {
			t.Fatalf("prefix = %q, want %q", p.Prefix, apikeysv1alpha1.DefaultPrefix)
		}
		if len(p.Body) != BodyLength || strings.Trim(p.Body, base62Digits) != "" {
			t.Fatalf("body is not %d base62 characters", BodyLength)
		}
	}
	for _, prefix := range []string{"ro_pat", prefix16, "x9"} {
		tok, err := Generate(prefix)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := Parse(tok); err != nil || p.Prefix != prefix {
			t.Errorf("Parse(Generate(%q)) = %q, %v", prefix, p.Prefix, err)
		}
	}
}

func TestGenerateInvalidPrefix(t *testing.T) {
	for _, prefix := range []string{"", "a", "Ak", "ab_", prefix16 + "x"} {
		if tok, err := Generate(prefix); !errors.Is(err, ErrPrefix) || tok != "" {
			t.Errorf("Generate(%q) = %q, %v; want ErrPrefix", prefix, tok, err)
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	// Bytes 0..42 map straight onto the alphabet.
	tok, err := generate(&countingReader{}, "ak")
	if err != nil {
		t.Fatal(err)
	}
	if tok != akToken {
		t.Errorf("generate(0,1,2,...) = %q, want %q", tok, akToken)
	}

	// Bytes >= 248 are rejected rather than folded (248 % 62 == 0 would
	// bias towards '0'); 247 % 62 == 61 is the last accepted value.
	src := make([]byte, 0, 128)
	for range BodyLength {
		src = append(src, 248, 255, 247)
	}
	tok, err = generate(&sliceReader{src}, "ak")
	if err != nil {
		t.Fatal(err)
	}
	if want := mk("ak", strings.Repeat("z", BodyLength)); tok != want {
		t.Errorf("generate with rejected bytes = %q, want %q", tok, want)
	}
}

// sliceReader returns its bytes and then zeros, in whatever chunks asked for.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	clear(p[n:])
	return len(p), nil
}

func TestGenerateReaderError(t *testing.T) {
	boom := errors.New("boom")
	if _, err := generate(errReader{boom}, "ak"); !errors.Is(err, boom) {
		t.Errorf("error = %v, want wrapping %v", err, boom)
	}
	if _, err := generate(strings.NewReader("short"), "ak"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error = %v, want io.ErrUnexpectedEOF", err)
	}
	// All bytes rejected until the source runs dry.
	if _, err := generate(strings.NewReader(strings.Repeat("\xff", 64)), "ak"); !errors.Is(err, io.EOF) {
		t.Errorf("error = %v, want io.EOF", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestHash(t *testing.T) {
	if got := Hash(akToken); got != akTokenHash {
		t.Errorf("Hash(akToken) = %q, want %q", got, akTokenHash)
	}
	tok, err := Generate("ro_pat")
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte(tok))
	if got := Hash(tok); got != "sha256:"+hex.EncodeToString(want[:]) {
		t.Errorf("Hash = %q, want sha256:%x", got, want)
	}
	if Sum(tok) != want {
		t.Error("Sum differs from sha256.Sum256")
	}
	// Inputs longer than any token hash the same.
	long := strings.Repeat("x", 1000)
	if Sum(long) != sha256.Sum256([]byte(long)) {
		t.Error("Sum differs from sha256.Sum256 for a long input")
	}
	if got, want := Hash(""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; got != want {
		t.Errorf(`Hash("") = %q, want %q`, got, want)
	}
}

func TestParseHash(t *testing.T) {
	sum, err := ParseHash(akTokenHash)
	if err != nil {
		t.Fatal(err)
	}
	if sum != Sum(akToken) {
		t.Error("ParseHash(Hash(tok)) != Sum(tok)")
	}
	if FormatHash(sum) != akTokenHash {
		t.Error("FormatHash(ParseHash(h)) != h")
	}
	hexPart := akTokenHash[len("sha256:"):]
	for _, bad := range []string{
		"",
		"sha256:",
		hexPart,
		"sha256:" + strings.ToUpper(hexPart),
		"SHA256:" + hexPart,
		"sha512:" + hexPart,
		"sha256:" + hexPart[:63],
		"sha256:" + hexPart + "0",
		"sha256:" + hexPart[:63] + "g",
		"sha256:" + hexPart[:63] + "é"[:1],
		" " + akTokenHash,
	} {
		if _, err := ParseHash(bad); err != ErrHashFormat {
			t.Errorf("ParseHash(%q) error = %v, want ErrHashFormat", bad, err)
		}
	}
}

func TestHint(t *testing.T) {
	tests := []struct{ tok, want string }{
		{akToken, "ak_0123…"},
		{roPatToken, "ro_pat_0123…"},
		{paddedToken, "ak_0123…"},
		{"", ""},
		{akToken[:len(akToken)-1] + "Y", ""},
		{"not a token", ""},
	}
	for _, tt := range tests {
		if got := Hint(tt.tok); got != tt.want {
			t.Errorf("Hint(%q) = %q, want %q", tt.tok, got, tt.want)
		}
	}
}

func TestPartsFormattingHidesBody(t *testing.T) {
	p, err := Parse(roPatToken)
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		out := fmt.Sprintf(verb, p)
		if strings.Contains(out, testBody[:8]) {
			t.Errorf("Sprintf(%s, Parts) = %q reveals the body", verb, out)
		}
		if !strings.Contains(out, "ro_pat_0123…") {
			t.Errorf("Sprintf(%s, Parts) = %q, want the hint", verb, out)
		}
	}
	// Also when nested, as in a logged struct.
	if out := fmt.Sprintf("%+v", struct{ P Parts }{p}); strings.Contains(out, testBody[:8]) {
		t.Errorf("nested Parts formatted as %q reveals the body", out)
	}
}

func TestZeroAllocs(t *testing.T) {
	var sink [sha256.Size]byte
	longest := mk(prefix16, testBody)
	typo := akToken[:len(akToken)-1] + "Y"
	kib := strings.Repeat("x", 1<<10)
	for name, fn := range map[string]func(){
		"Parse":           func() { _, _ = Parse(roPatToken) },
		"Parse rejection": func() { _, _ = Parse(typo) },
		"Sum":             func() { sink = Sum(longest) },
		"Sum of 1 KiB":    func() { sink = Sum(kib) },
		"ParseHash":       func() { sink, _ = ParseHash(akTokenHash) },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocs, want 0", name, n)
		}
	}
	_ = sink
}

func TestFingerprint(t *testing.T) {
	tok, err := Generate("ak")
	if err != nil {
		t.Fatal(err)
	}
	fp := Fingerprint(tok)
	if len(fp) != 16 {
		t.Fatalf("fingerprint has %d characters, want 16", len(fp))
	}
	if fp != Fingerprint(tok) {
		t.Fatal("fingerprint is not deterministic")
	}
	other, err := Generate("ak")
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(other) == fp {
		t.Fatal("two tokens share a fingerprint")
	}
	if hash := FormatHash(Sum(tok)); strings.Contains(hash, fp) {
		t.Fatal("the fingerprint is part of the stored hash")
	}
}
