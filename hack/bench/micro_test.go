package main

import (
	"math"
	"testing"
)

// TestVerifyRatios reads go test output as runMicro gets it: the ratio is
// the Verify benchmark's paired x-sha256 where it reports one, and the
// ratio of medians against BenchmarkSHA256 where it does not.
func TestVerifyRatios(t *testing.T) {
	const out = `pkg: github.com/apikey-operator/apikey-operator/internal/authserver
BenchmarkVerify/keys=1000-2     7592226   160.0 ns/op   1.40 x-sha256   0 B/op   0 allocs/op
BenchmarkVerify/keys=1000-2     7403275   170.0 ns/op   1.44 x-sha256   0 B/op   0 allocs/op
BenchmarkVerify/keys=1000-2     7403275   150.0 ns/op   1.42 x-sha256   0 B/op   0 allocs/op
BenchmarkVerify/keys=1000000-2  8617630   180.0 ns/op   0 B/op   1 allocs/op
BenchmarkSHA256/token-2        10272454   100.0 ns/op   0 B/op   0 allocs/op
`
	got := (&microResult{benches: parseBenchOutput(out)}).verifyRatios()
	if len(got) != 2 {
		t.Fatalf("got %d rows, want 2: %+v", len(got), got)
	}
	paired, separate := got[0], got[1]
	if !paired.paired || math.Abs(paired.ratio-1.42) > 1e-9 {
		t.Errorf("keys=1000: ratio %v paired %v, want the median x-sha256 1.42, paired", paired.ratio, paired.paired)
	}
	if paired.verdict() == met {
		t.Errorf("keys=1000: verdict %q, want it qualified: the target is stated at 1M keys", paired.verdict())
	}
	if separate.paired || math.Abs(separate.ratio-1.8) > 1e-9 || separate.reference != "authserver.BenchmarkSHA256/token" {
		t.Errorf("keys=1000000: ratio %v paired %v against %q, want 1.8 against authserver.BenchmarkSHA256/token",
			separate.ratio, separate.paired, separate.reference)
	}
	if v := separate.verdict(); v != missed {
		t.Errorf("keys=1000000 at 1.8× with an allocation: verdict %q, want %q", v, missed)
	}
}
