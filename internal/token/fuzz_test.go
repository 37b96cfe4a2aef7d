package token

import (
	"strings"
	"testing"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// FuzzParse checks that Parse never panics, that whatever it accepts is
// exactly a canonical token rebuilt from its parts, and that whatever it
// rejects is rejected with a fixed error that cannot carry input bytes.
func FuzzParse(f *testing.F) {
	for _, prefix := range []string{apikeysv1alpha1.DefaultPrefix, "ro_pat", prefix16, "x9"} {
		tok, err := Generate(prefix)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	for _, s := range []string{
		akToken,
		roPatToken,
		paddedToken,
		noSepCRCTok,
		"",
		"_",
		"ak_",
		"ak__" + testBody + "1UI0KZ",
		akToken + "\n",
		"Ak" + akToken[2:],
		akToken[:len(akToken)-1] + "Y",
		strings.Replace(akToken, "0", "é", 1),
		"ak_" + testBody[:42] + "\xff1UI0KZ",
		strings.Repeat("a", MaxLength+1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := Parse(in)
		if err != nil {
			if !isStaticError(err) {
				t.Fatalf("Parse returned an unexpected error value %q", err)
			}
			if p != (Parts{}) {
				t.Fatalf("Parse returned non-empty parts with an error")
			}
			if Hint(in) != "" {
				t.Fatalf("Hint of a rejected token is not empty")
			}
			return
		}
		if err := ValidPrefix(p.Prefix); err != nil {
			t.Fatalf("Parse accepted prefix %q: %v", p.Prefix, err)
		}
		if len(p.Body) != BodyLength || strings.Trim(p.Body, base62Digits) != "" {
			t.Fatalf("Parse accepted body %q", p.Body)
		}
		if rebuilt := p.Prefix + "_" + p.Body + Checksum(p.Prefix+"_"+p.Body); rebuilt != in {
			t.Fatalf("Parse(%q) = %q, %q; rebuilt %q", in, p.Prefix, p.Body, rebuilt)
		}
		if want := p.Prefix + "_" + p.Body[:4] + "…"; Hint(in) != want {
			t.Fatalf("Hint(%q) = %q, want %q", in, Hint(in), want)
		}
	})
}
