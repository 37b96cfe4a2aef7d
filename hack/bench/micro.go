package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
)

// microPackages are the packages whose Go benchmarks the report includes.
var microPackages = []string{"./internal/token", "./internal/authserver"}

// microBench is one benchmark's samples, one per -count run, by unit.
type microBench struct {
	pkg, name string
	units     []string // in the order go test prints them
	samples   map[string][]float64
}

func (b *microBench) median(unit string) (float64, bool) {
	s, ok := b.samples[unit]
	if !ok {
		return 0, false
	}
	return median(s), true
}

// microResult is what the micro-benchmark run produced.
type microResult struct {
	command string
	benches []*microBench
	// raw is go test's output, kept for the report's appendix.
	raw string
	// err is set if go test failed; benches may still hold what ran.
	err error
}

// find returns the benchmark called name in pkg, or its first
// sub-benchmark (name/…) if it only has those.
func (m *microResult) find(pkg, name string) *microBench {
	var sub *microBench
	for _, b := range m.benches {
		if b.pkg != pkg {
			continue
		}
		if b.name == name {
			return b
		}
		if sub == nil && strings.HasPrefix(b.name, name+"/") {
			sub = b
		}
	}
	return sub
}

// runMicro runs the Go benchmarks of microPackages and parses their output.
func runMicro(c config) *microResult {
	args := append([]string{"test"}, microPackages...)
	args = append(args, "-run", "^$", "-bench", ".", "-benchmem",
		"-count", strconv.Itoa(c.microCount), "-benchtime", c.microBenchtime)
	res := &microResult{command: "go " + strings.Join(args, " ")}

	cmd := exec.Command("go", args...)
	cmd.Dir = harness.ModuleRoot()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	res.err = cmd.Run()
	res.raw = out.String()
	res.benches = parseBenchOutput(res.raw)
	if res.err != nil {
		res.err = fmt.Errorf("%s: %w", res.command, res.err)
	}
	harness.Progress("  %d benchmarks parsed", len(res.benches))
	return res
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parseBenchOutput reads go test -bench output: "pkg:" lines name the
// package; "Benchmark…" lines carry an iteration count and value/unit pairs.
func parseBenchOutput(out string) []*microBench {
	var benches []*microBench
	byKey := map[string]*microBench{}
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = path.Base(strings.TrimSpace(p))
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(fields[1]); err != nil {
			continue
		}
		name := procsSuffix.ReplaceAllString(fields[0], "")
		key := pkg + "." + name
		b := byKey[key]
		if b == nil {
			b = &microBench{pkg: pkg, name: name, samples: map[string][]float64{}}
			byKey[key] = b
			benches = append(benches, b)
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				break
			}
			unit := fields[i+1]
			if _, seen := b.samples[unit]; !seen {
				b.units = append(b.units, unit)
			}
			b.samples[unit] = append(b.samples[unit], v)
		}
	}
	return benches
}

// verifyRatio compares one Verify benchmark with a plain SHA-256 of a token.
type verifyRatio struct {
	// name is the Verify benchmark; found reports whether it ran.
	name  string
	found bool
	// keys is the index size the benchmark ran with.
	keys int
	// reference is what Verify was divided by: SHA-256 of the same token
	// timed beside it (paired), or a separate SHA-256 benchmark; "" if
	// neither ran.
	reference string
	paired    bool
	ratio     float64
	allocs    float64
}

// pairedUnit is the metric BenchmarkVerify reports: its time over SHA-256's
// of the same token, measured in alternating blocks in one process.
const pairedUnit = "x-sha256"

// measured reports whether both benchmarks ran, so ratio means something.
func (r verifyRatio) measured() bool { return r.found && r.reference != "" }

// verdict judges the ratio; the target is stated with 1M keys in the
// index, so a smaller index only shows the trend.
func (r verifyRatio) verdict() string {
	if !r.measured() {
		return notMeasured
	}
	var lighter []string
	if r.keys < verifyTargetKeys {
		lighter = []string{fmt.Sprintf("%d keys", r.keys)}
	}
	return verdictAt(r.ratio <= maxVerifyRatio && r.allocs == 0, lighter)
}

// verifyRatios computes Verify ÷ SHA-256 for each index size that ran
// (BenchmarkVerify/keys=N), and a missing row for the target's 1M keys if that
// size did not run. The ratio is the benchmark's own paired one (pairedUnit,
// median over the runs) when it reports it: the two sides timed
// milliseconds apart rather than in benchmarks seconds apart, so the
// machine's drift cancels. Otherwise it is the ratio of medians against
// authserver's BenchmarkSHA256, or token's BenchmarkSum (one SHA-256 of a
// token) if that is missing.
func (m *microResult) verifyRatios() []verifyRatio {
	sha := m.find("authserver", "BenchmarkSHA256")
	if sha == nil {
		sha = m.find("token", "BenchmarkSum")
	}
	var out []verifyRatio
	for _, v := range m.benches {
		sizeText, ok := strings.CutPrefix(v.name, "BenchmarkVerify/keys=")
		keys, err := strconv.Atoi(sizeText)
		if v.pkg != "authserver" || !ok || err != nil {
			continue
		}
		r := verifyRatio{name: v.name, found: true, keys: keys}
		r.allocs, _ = v.median("allocs/op")
		if paired, ok := v.median(pairedUnit); ok {
			r.reference, r.paired, r.ratio = "SHA-256 of the same token, in alternating blocks", true, paired
		} else if sha != nil {
			r.reference = sha.pkg + "." + sha.name
			vn, _ := v.median("ns/op")
			sn, _ := sha.median("ns/op")
			if sn > 0 {
				r.ratio = vn / sn
			}
		}
		out = append(out, r)
	}
	if !slices.ContainsFunc(out, func(r verifyRatio) bool { return r.keys >= verifyTargetKeys }) {
		out = append(out, verifyRatio{name: fmt.Sprintf("BenchmarkVerify/keys=%d", verifyTargetKeys), keys: verifyTargetKeys})
	}
	return out
}
