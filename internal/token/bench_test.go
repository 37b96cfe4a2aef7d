package token

import (
	"crypto/sha256"
	"testing"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

var (
	benchParts Parts
	benchStr   string
	benchSum   [sha256.Size]byte
)

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		tok, err := Generate(apikeysv1alpha1.DefaultPrefix)
		if err != nil {
			b.Fatal(err)
		}
		benchStr = tok
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		p, err := Parse(roPatToken)
		if err != nil {
			b.Fatal(err)
		}
		benchParts = p
	}
}

func BenchmarkSum(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSum = Sum(roPatToken)
	}
}

func BenchmarkHash(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchStr = Hash(roPatToken)
	}
}
