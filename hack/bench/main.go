// Command bench measures the operator against its performance targets (the
// constants in report.go; docs/benchmarks.md states them) and writes
// docs/benchmarks.md. It runs the Go micro-benchmarks, a forward-auth
// load test against a bare net/http handler, and, on a test control plane
// (envtest), revocation latency, issuance latency, rotation, bulk issuance
// and the auth server's memory per key.
//
//	go run ./hack/bench -out docs/benchmarks.md
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
)

// config is the command line: every duration, size and trial count.
type config struct {
	out        string
	sections   map[string]bool
	logFile    string
	cpuProfile string
	// apiServerProfile receives kube-apiserver's CPU profile of the bulk
	// issuance run.
	apiServerProfile string
	memProfile       string

	microCount     int
	microBenchtime string

	httpKeys, httpConns              int
	httpRounds, httpOpenRounds       int
	httpMaxRequests                  int
	httpWarmup, httpClosed, httpOpen time.Duration

	revokeTrials      int
	revokeScaleTrials int
	applyTrials       int
	rotateTrials      int
	rotateGrace       time.Duration

	issueKeys    int
	issueTimeout time.Duration
	reconcilers  int
	kubeAPIQPS   float64
	kubeAPIBurst int

	heapKeys        int
	heapWithKeys    bool
	heapKeyStatus   bool
	heapCreateLimit time.Duration

	createWorkers int
}

var allSections = []string{"micro", "http", "revoke", "apply", "rotate", "issue", "heap"}

func parseFlags() config {
	var c config
	var sections string
	flag.StringVar(&c.out, "out", "docs/benchmarks.md", "Markdown report to write.")
	flag.StringVar(&sections, "sections", strings.Join(allSections, ","),
		"Comma-separated sections to run: "+strings.Join(allSections, ", ")+".")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "Write a CPU profile of the whole run (this process) to this file.")
	flag.StringVar(&c.apiServerProfile, "apiserver-cpuprofile", "",
		"Write kube-apiserver's CPU profile of the bulk issuance run (its /debug/pprof) to this file.")
	flag.StringVar(&c.memProfile, "heapprofile", "",
		"Write a heap profile taken while the memory section's auth server holds the most records, and one near "+
			"its start-up peak (F.peak; the combined manager's: F.combined, F.combined.peak).")
	flag.StringVar(&c.logFile, "log", "", "File for controller-runtime, client-go and server logs (default: a temporary file).")

	flag.IntVar(&c.microCount, "micro-count", 3, "go test -count for the micro-benchmarks; the report shows medians.")
	flag.StringVar(&c.microBenchtime, "micro-benchtime", "1s", "go test -benchtime for the micro-benchmarks.")

	flag.IntVar(&c.httpKeys, "http-keys", 10000, "Keys in the index behind the forward-auth load test.")
	flag.IntVar(&c.httpConns, "http-conns", 32, "Keep-alive connections of the load generator.")
	flag.IntVar(&c.httpRounds, "http-rounds", 12,
		"Closed-loop rounds, each measuring the bare handler, the bare handler with the auth server's headers and the auth server in turn.")
	flag.IntVar(&c.httpOpenRounds, "http-open-rounds", 12,
		"Open-loop rounds, each measuring the bare handler, the bare handler with the auth server's headers and the auth server in turn.")
	flag.IntVar(&c.httpMaxRequests, "http-max-requests", 1000000, "Most requests in one measurement, whatever its length.")
	flag.DurationVar(&c.httpWarmup, "http-warmup", time.Second, "Unmeasured load on each server before the rounds.")
	flag.DurationVar(&c.httpClosed, "http-closed", time.Second, "Length of one closed-loop (max throughput) measurement.")
	flag.DurationVar(&c.httpOpen, "http-open", 2*time.Second, "Length of one open-loop (fixed rate) measurement.")

	flag.IntVar(&c.revokeTrials, "revoke-trials", 25,
		"Revocation trials of each kind (delete, suspend) in the revoke section: a few keys, no load.")
	flag.IntVar(&c.revokeScaleTrials, "revoke-scale-trials", 50,
		"Revocation trials of each kind run in the heap section, once a combined manager holds every key, "+
			"with forward-auth under half load; 0 skips them.")
	flag.IntVar(&c.applyTrials, "apply-trials", 50, "Create → Ready trials.")
	flag.IntVar(&c.rotateTrials, "rotate-trials", 40, "Rotation trials, one key each.")
	flag.DurationVar(&c.rotateGrace, "rotate-grace", 2*time.Second,
		"spec.rotation.gracePeriod of the rotation trials' keys. validUntil counts from whole seconds, "+
			"so the grace that plays out is up to 1 s shorter.")

	flag.IntVar(&c.issueKeys, "issue-keys", 10000, "ApiKeys created at once for the bulk issuance run; 0 skips it.")
	flag.DurationVar(&c.issueTimeout, "issue-timeout", 5*time.Minute,
		"Stop waiting for bulk issuance after this long; the count Ready at 60 s is reported either way. Long "+
			"enough for every key to be issued, so the apply section finds them present and no backlog.")
	flag.IntVar(&c.reconcilers, "reconcilers", 8,
		"The controller's MaxConcurrentReconciles, as cmd/main.go's --max-concurrent-reconciles (default 8).")
	flag.Float64Var(&c.kubeAPIQPS, "kube-api-qps", 100,
		"Client-side QPS of the managers' rest config, as cmd/main.go's --kube-api-qps.")
	flag.IntVar(&c.kubeAPIBurst, "kube-api-burst", 200,
		"Client-side burst of the managers' rest config, as cmd/main.go's --kube-api-burst.")

	flag.IntVar(&c.heapKeys, "heap-keys", 100000, "Records in the cluster for the memory measurement (also measured at half).")
	flag.BoolVar(&c.heapWithKeys, "heap-apikeys", true, "Create an ApiKey beside each record, as issuance would.")
	flag.BoolVar(&c.heapKeyStatus, "heap-apikey-status", true,
		"Give each directly created ApiKey the status the controller would write (one more API call per key).")
	flag.DurationVar(&c.heapCreateLimit, "heap-create-budget", 100*time.Second,
		"Most time to spend creating objects for the memory measurement; fewer keys are measured if it runs out.")

	flag.IntVar(&c.createWorkers, "create-workers", 32, "Parallel API clients for bulk creation.")
	flag.Parse()

	c.sections = map[string]bool{}
	for _, s := range strings.Split(sections, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.sections[s] = true
		}
	}
	return c
}

func main() {
	c := parseFlags()
	for s := range c.sections {
		if !slices.Contains(allSections, s) {
			fmt.Fprintf(os.Stderr, "unknown section %q; known: %s\n", s, strings.Join(allSections, ", "))
			os.Exit(2)
		}
	}
	failed, err := run(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if failed {
		fmt.Fprintln(os.Stderr, "bench: some sections failed; see the report")
		os.Exit(1)
	}
}

// run measures every selected section and writes the report. A section that
// fails is reported as failed and the others still run.
func run(c config) (failed bool, err error) {
	started := time.Now()
	logs, err := harness.OpenLogs(c.logFile, "apikey-bench-*.log")
	if err != nil {
		return false, err
	}
	defer func() { _ = logs.Close() }()
	harness.Progress("logs go to %s", logs.Name())
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return false, err
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return false, err
		}
		defer pprof.StopCPUProfile()
	}

	r := &report{machine: describeMachine(), started: started, loadStart: loadAverage()}
	if c.sections["micro"] {
		harness.Progress("micro-benchmarks (go test -bench, -count %d)", c.microCount)
		r.micro = runMicro(c)
	}
	if c.sections["http"] {
		harness.Progress("forward-auth vs bare handler over TLS")
		r.http = runHTTP(c, logs)
	}
	if c.sections["revoke"] || c.sections["apply"] || c.sections["rotate"] || c.sections["issue"] || c.sections["heap"] {
		runControlPlane(c, r, logs)
	}
	r.elapsed = time.Since(started)
	r.loadEnd = loadAverage()

	md, renderErr := r.markdown(c)
	if err := os.WriteFile(c.out, []byte(md), 0o644); err != nil {
		return false, err
	}
	if renderErr != nil {
		return false, fmt.Errorf("rendering %s: %w", c.out, renderErr)
	}
	harness.Progress("wrote %s in %s", c.out, r.elapsed.Round(time.Second))
	return r.failed(), nil
}

// progress tells the person running the benchmark where it is. It never
// prints tokens: callers pass counts and durations only.
