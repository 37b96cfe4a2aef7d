package main

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// report collects every section's result and renders docs/benchmarks.md.
type report struct {
	machine            machineInfo
	loadStart, loadEnd string
	started            time.Time
	elapsed            time.Duration
	controlPlane       string
	envErr             error
	// revokeKeys and applyKeys are the auth server's index size when those
	// sections started: the keys present.
	revokeKeys, applyKeys int

	micro  *microResult
	http   *httpResult
	revoke *revokeResult
	apply  *applyResult
	rotate *rotateResult
	issue  *issueResult
	// applyAdmission and issueAdmission are what admission cost the
	// creates of those sections, as kube-apiserver timed it.
	applyAdmission, issueAdmission *admissionCost
	heap                           *heapResult
}

// failed reports whether any section that ran failed.
func (r *report) failed() bool {
	return r.envErr != nil ||
		(r.micro != nil && r.micro.err != nil) ||
		(r.http != nil && r.http.err != nil) ||
		(r.revoke != nil && r.revoke.err != nil) ||
		(r.apply != nil && r.apply.err != nil) ||
		(r.rotate != nil && r.rotate.err != nil) ||
		(r.issue != nil && r.issue.err != nil) ||
		r.heapFailed()
}

// heapFailed reports whether the memory section, in either mode, or the
// revocation trials it runs failed.
func (r *report) heapFailed() bool {
	h := r.heap
	return h != nil && (h.err != nil ||
		(h.combined != nil && h.combined.err != nil) ||
		(h.revoke != nil && h.revoke.err != nil))
}

// scaleRevoke is revocation at scale, measured in the memory section, or nil.
func (r *report) scaleRevoke() *scaleRevokeResult {
	if r.heap == nil {
		return nil
	}
	return r.heap.revoke
}

// Target limits, from SPEC §9, and the conditions they are stated at.
const (
	maxVerifyRatio    = 1.5
	verifyTargetKeys  = 1_000_000
	minThroughput     = 0.95
	maxP99Ratio       = 1.2
	maxRevokeP99      = 25 * time.Millisecond
	revokeTargetKeys  = 100_000
	maxApplyP50       = 50 * time.Millisecond
	maxApplyP99       = 250 * time.Millisecond
	applyTargetKeys   = 10_000
	maxRotateUsable   = 250 * time.Millisecond // p50
	maxRotateRefused  = time.Second            // every trial
	minIssueRatio     = 0.25
	maxIssueTime      = 60 * time.Second
	issueTargetCount  = 10000
	maxHeapPerKey     = 1024.0
	heapTargetRecords = 100_000
)

// The targets as SPEC §9 states them.
const (
	verifyTarget     = "≤ 1.5× one SHA-256, 0 allocs, with 1M keys in the index"
	throughputTarget = "≥ 0.95× the bare handler (median of ≥ 12 alternating rounds)"
	p99Target        = "≤ 1.2× the bare handler's p99 at the same offered load"
	revokeTarget     = "p99 < 25 ms with 100k keys indexed and forward-auth under half load"
	applyTarget      = "p50 < 50 ms, p99 < 250 ms, admission in the path, 10k keys present"
	issueTarget      = "≥ 0.25× the API server's raw create rate for plain ConfigMaps (same clients, same run)"
	heapTarget       = "< 1 KiB per key beyond baseline in every mode, measured at 100k keys"
)

// verdict words.
const (
	met         = "met"
	missed      = "**missed**"
	notMeasured = "not measured"
)

func verdict(ok bool) string {
	if ok {
		return met
	}
	return missed
}

// verdictAt is verdict for a run that may not have had the target's
// conditions: a number that misses is missed whatever the conditions, one
// that meets under lighter conditions than SPEC's is not a met target.
func verdictAt(ok bool, lighter []string) string {
	if !ok {
		return missed
	}
	if len(lighter) > 0 {
		return "not measured as stated (met with " + strings.Join(lighter, ", ") + ")"
	}
	return met
}

// admissionPath says which admission ran on ApiKey creates in this run.
const admissionPath = "the CRD's schema and CEL rules; the owner ValidatingAdmissionPolicy and its binding (installed " +
	"as config/policy ships them; its matchConditions let identity Key creates, which these are, through without its " +
	"validations); and the operator's two admission webhooks, registered by envtest from config/webhook (with their " +
	"matchConditions) and served over TLS on 127.0.0.1 by the controller's manager, as in a cluster"

// mdWriter builds the Markdown text.
type mdWriter struct{ strings.Builder }

func (w *mdWriter) line(format string, args ...any) {
	fmt.Fprintf(&w.Builder, format, args...)
	w.WriteString("\n")
}

func (w *mdWriter) row(cells ...string) {
	w.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

func (w *mdWriter) table(header ...string) {
	w.row(header...)
	seps := make([]string, len(header))
	for i := range seps {
		seps[i] = "---"
	}
	w.row(seps...)
}

func (r *report) markdown(c config) string {
	w := &mdWriter{}
	w.line("# Benchmarks")
	w.line("")
	w.line("Measured by `make bench` (the program in `hack/bench`) against the targets of SPEC §9.")
	w.line("This file is generated: run `make bench` again rather than editing it.")
	w.line("")
	w.line("Run on %s; the whole run took %s.", r.machine.date.Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second))
	w.line("")
	r.writeMachine(w)
	r.writeSummary(w)
	r.writeMicro(w)
	r.writeHTTP(w, c)
	r.writeRevoke(w)
	r.writeApply(w)
	r.writeRotate(w)
	r.writeIssue(w)
	r.writeHeap(w)
	writeReproduce(w)
	r.writeRaw(w)
	return w.String()
}

func (r *report) writeMachine(w *mdWriter) {
	w.line("## Machine")
	w.line("")
	w.table("", "")
	w.row("CPUs (nproc)", fmt.Sprintf("%d (GOMAXPROCS %d)", r.machine.cpus, r.machine.gomaxprocs))
	w.row("CPU model", r.machine.cpuModel)
	w.row("Memory", r.machine.memory)
	w.row("Go", r.machine.goVersion)
	w.row("Kernel", r.machine.kernel)
	w.row("Load average (1, 5, 15 min)", fmt.Sprintf("%s at the start; %s at the end", r.loadStart, r.loadEnd))
	cp := r.controlPlane
	if cp == "" {
		cp = notMeasured
	}
	w.row("Test control plane", "kube-apiserver and etcd "+cp+" (envtest), on the same CPUs")
	w.row("Settings", "`"+settings()+"`")
	w.line("")
}

// notSettings are flags that do not change what is measured (and
// -kubeconfig, which controller-runtime registers in every program).
var notSettings = []string{"out", "log", "cpuprofile", "heapprofile", "kubeconfig"}

// settings is the command line's flags with their values.
func settings() string {
	var parts []string
	flag.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(notSettings, f.Name) {
			parts = append(parts, "-"+f.Name+"="+f.Value.String())
		}
	})
	return strings.Join(parts, " ")
}

func (r *report) writeSummary(w *mdWriter) {
	w.line("## Summary")
	w.line("")
	w.table("SPEC §9 target", "measured", "target", "result")
	for _, row := range r.summaryRows() {
		w.row(row[:]...)
	}
	w.line("")
}

func (r *report) summaryRows() [][4]string {
	var rows [][4]string
	add := func(what, measured, target, result string) {
		rows = append(rows, [4]string{what, measured, target, result})
	}
	r.microSummary(add)
	r.httpSummary(add)

	rows = append(rows, r.revokeSummary())

	apply := [4]string{"`kubectl apply` → Secret delivered and Ready", "—", applyTarget, notMeasured}
	if a := r.apply; a != nil && a.ready.n > 0 {
		apply[1] = fmt.Sprintf("p50 %s, p99 %s (%d trials, %d keys present, admission webhooks in the path)",
			ms(a.ready.p50), ms(a.ready.p99), a.ready.n, r.applyKeys)
		apply[3] = r.applyVerdict()
	}
	rows = append(rows, apply)
	rows = append(rows, r.rotateSummary()...)

	rows = append(rows, r.issueSummary())

	rows = append(rows, r.heapSummary()...)
	return rows
}

// heapSummary is a row per mode: SPEC §9 asks for every mode, so the
// target is met only if each row is.
func (r *report) heapSummary() [][4]string {
	rows := [][4]string{
		{"memory per key, " + combinedMode + " manager (controller + auth server)", "—", heapTarget, notMeasured},
		{"memory per key, " + authOnlyMode + " replica", "—", heapTarget, notMeasured},
	}
	h := r.heap
	if h == nil {
		return rows
	}
	for i, m := range []*heapResult{h.combined, h} {
		if m == nil {
			rows[i][1] = "not measured (the section ran without ApiKeys)"
			continue
		}
		if perKey, ok := m.perKey(); ok {
			rows[i][1] = heapMeasured(m, perKey)
			rows[i][3] = heapVerdict(m, perKey)
		} else if m.err != nil {
			rows[i][3] = "**failed**"
		}
	}
	return rows
}

// revokeSummary judges revocation on the run at scale when it ran, else on
// the light section.
func (r *report) revokeSummary() [4]string {
	row := [4]string{"revoke/suspend → 401", "—", revokeTarget, notMeasured}
	if s := r.scaleRevoke(); s != nil && s.all.n > 0 {
		row[1] = fmt.Sprintf("p99 %s (p50 %s, max %s; delete p50/p99/max %s; suspend %s; %d trials on the "+
			"combined manager with %d keys indexed, forward-auth at %.0f req/s offered, %s; %.0f req/s answered)",
			ms(s.all.p99), ms(s.all.p50), ms(s.all.mx), pctls(s.deleted), pctls(s.suspended), s.all.n, s.keys,
			s.offered, halfOf(s), s.achieved)
		row[3] = scaleRevokeVerdict(s)
		return row
	} else if s != nil && s.err != nil {
		row[1], row[3] = "at scale: "+s.err.Error(), "**failed**"
		return row
	}
	if rv := r.revoke; rv != nil && rv.all.n > 0 {
		row[1] = fmt.Sprintf("p99 %s (%d trials, %d keys indexed, no forward-auth load; the run at scale did not run)",
			ms(rv.all.p99), rv.all.n, r.revokeKeys)
		row[3] = r.revokeVerdict()
	}
	return row
}

// pctls is p50/p99/max of l.
func pctls(l latencies) string {
	return fmt.Sprintf("%s / %s / %s", ms(l.p50), ms(l.p99), ms(l.mx))
}

// halfOf says what the offered load was half of.
func halfOf(s *scaleRevokeResult) string {
	from := "measured on this manager"
	if s.maxFromHTTP {
		from = "§2's median"
	}
	return fmt.Sprintf("half the auth server's closed-loop max of %.0f req/s, %s", s.maxRPS, from)
}

// scaleRevokeVerdict judges revocation at scale against SPEC's p99 and its
// conditions: 100k keys indexed, and the load running through every trial.
func scaleRevokeVerdict(s *scaleRevokeResult) string {
	var lighter []string
	if s.keys < revokeTargetKeys {
		lighter = append(lighter, fmt.Sprintf("%d keys indexed", s.keys))
	}
	if !s.underLoad() {
		lighter = append(lighter, "the forward-auth load not running throughout")
	}
	return verdictAt(s.err == nil && s.all.n > 0 && s.all.p99 < maxRevokeP99, lighter)
}

// revokeVerdict judges revocation against SPEC's p99 and its conditions.
func (r *report) revokeVerdict() string {
	rv := r.revoke
	var lighter []string
	if r.revokeKeys < revokeTargetKeys {
		lighter = append(lighter, fmt.Sprintf("%d keys indexed", r.revokeKeys))
	}
	lighter = append(lighter, "no forward-auth load")
	return verdictAt(rv.err == nil && rv.all.n > 0 && rv.all.p99 < maxRevokeP99, lighter)
}

// applyVerdict judges create → Ready against SPEC's p50 and p99 and their
// conditions.
func (r *report) applyVerdict() string {
	a := r.apply
	var lighter []string
	if r.applyAdmission == nil || r.applyAdmission.err != nil || r.applyAdmission.steps[0].calls == 0 {
		lighter = append(lighter, "the mutating webhook's calls not seen")
	}
	if r.applyKeys < applyTargetKeys {
		lighter = append(lighter, fmt.Sprintf("%d keys present", r.applyKeys))
	}
	return verdictAt(a.err == nil && a.ready.n > 0 && a.ready.p50 < maxApplyP50 && a.ready.p99 < maxApplyP99, lighter)
}

// heapVerdict judges memory per key; below 100k records it is not the
// measurement SPEC asks for.
func heapVerdict(h *heapResult, perKey float64) string {
	var lighter []string
	if last := h.samples[len(h.samples)-1]; last.records < heapTargetRecords {
		lighter = append(lighter, fmt.Sprintf("%d records", last.records))
	}
	return verdictAt(h.err == nil && perKey < maxHeapPerKey, lighter)
}

func (r *report) rotateSummary() [][4]string {
	usable := [4]string{"rotation: annotation → new token usable", "—", "p50 < 250 ms", notMeasured}
	refused := [4]string{"rotation: grace end → old token refused", "—", "≤ 1 s after its grace end", notMeasured}
	if rt := r.rotate; rt != nil && rt.usable.n > 0 {
		usable[1] = fmt.Sprintf("p50 %s, p99 %s (%d trials)", ms(rt.usable.p50), ms(rt.usable.p99), rt.usable.n)
		usable[3] = verdict(rt.err == nil && rt.usable.p50 < maxRotateUsable)
		refused[1] = fmt.Sprintf("max %s, p99 %s (%d trials)", ms(rt.refused.mx), ms(rt.refused.p99), rt.refused.n)
		refused[3] = verdict(rt.err == nil && rt.refused.mx <= maxRotateRefused)
	}
	return [][4]string{usable, refused}
}

func (r *report) issueSummary() [4]string {
	row := [4]string{"bulk issuance", "—", issueTarget, notMeasured}
	is := r.issue
	if is == nil || is.rawRate() == 0 || (is.err != nil && is.readyCount == 0) {
		return row
	}
	row[1] = fmt.Sprintf("%.2f× (%.0f keys/s vs %.0f ConfigMaps/s, %d of each)", is.ratio(), is.rate(), is.rawRate(), is.keys)
	if is.ready > 0 {
		row[1] += fmt.Sprintf("; all Ready in %s", secs(is.ready))
	} else {
		row[1] += fmt.Sprintf("; %d Ready at 60 s", is.readyAtTarget)
	}
	row[3] = verdict(is.err == nil && is.ratio() >= minIssueRatio)
	return row
}

// projected is how long issuing every key would take at the rate seen.
func projected(is *issueResult) time.Duration {
	if rate := is.rate(); rate > 0 {
		return time.Duration(float64(is.keys) / rate * float64(time.Second))
	}
	return 0
}

// heapMeasured describes the memory verdict's number and where it came from.
func heapMeasured(h *heapResult, perKey float64) string {
	last := h.samples[len(h.samples)-1]
	if len(h.samples) == 1 {
		return fmt.Sprintf("%.0f B/key at %d records, baseline included", perKey, last.records)
	}
	return fmt.Sprintf("%.0f B/key beyond the baseline (slope from %d to %d records); %.0f B/key at %d with the baseline",
		perKey, h.samples[len(h.samples)-2].records, last.records, last.perKey(), last.records)
}

func (r *report) microSummary(add func(what, measured, target, result string)) {
	if r.micro == nil {
		add("verify in process", "—", verifyTarget, notMeasured)
		return
	}
	for _, v := range r.micro.verifyRatios() {
		what := "verify in process, " + strings.TrimPrefix(v.name, "BenchmarkVerify/")
		if !v.measured() {
			add(what, "missing", verifyTarget, notMeasured)
			continue
		}
		add(what, fmt.Sprintf("%.2f× SHA-256, %g allocs/op", v.ratio, v.allocs), verifyTarget, v.verdict())
	}
}

func (r *report) httpSummary(add func(what, measured, target, result string)) {
	h := r.http
	if h == nil || h.bareRPS == 0 {
		add("forward-auth throughput vs bare handler", "—", throughputTarget, notMeasured)
		add("forward-auth p99 at half load vs bare handler", "—", p99Target, notMeasured)
		return
	}
	ratio := h.oursRPS / h.bareRPS
	var fewRounds []string
	if len(h.closed) < 12 {
		fewRounds = []string{fmt.Sprintf("%d rounds", len(h.closed))}
	}
	add("forward-auth throughput vs bare handler",
		fmt.Sprintf("%.2f× (%.0f vs %.0f req/s)", ratio, h.oursRPS, h.bareRPS), throughputTarget,
		verdictAt(ratio >= minThroughput, fewRounds))
	if h.oursOpen.p99 == 0 {
		add("forward-auth p99 at half load vs bare handler", "—", p99Target, notMeasured)
		return
	}
	p99 := float64(h.oursOpen.p99) / float64(h.bareOpen.p99)
	add("forward-auth p99 at half load vs bare handler",
		fmt.Sprintf("%.2f× (%s vs %s)", p99, ms(h.oursOpen.p99), ms(h.bareOpen.p99)), p99Target, verdict(p99 <= maxP99Ratio))
}

func (r *report) writeMicro(w *mdWriter) {
	w.line("## 1. Verify in process (Go micro-benchmarks)")
	w.line("")
	m := r.micro
	if m == nil {
		w.line("Not run.")
		w.line("")
		return
	}
	w.line("`%s` (from the repository root); each number is the median of the runs.", m.command)
	w.line("")
	if m.err != nil {
		w.line("**go test failed**: %s. The benchmarks that ran are below; the output is in the appendix.", m.err)
		w.line("")
	}
	w.table("package", "benchmark", "ns/op", "B/op", "allocs/op", "other")
	for _, b := range m.benches {
		var other []string
		for _, u := range b.units {
			if u != "ns/op" && u != "B/op" && u != "allocs/op" {
				v, _ := b.median(u)
				other = append(other, fmt.Sprintf("%s %s", num(v), u))
			}
		}
		w.row(b.pkg, "`"+strings.TrimPrefix(b.name, "Benchmark")+"`", medianCell(b, "ns/op"),
			medianCell(b, "B/op"), medianCell(b, "allocs/op"), strings.Join(other, ", "))
	}
	w.line("")
	w.table("Verify ÷ SHA-256", "ratio", "allocs/op", "target", "result")
	for _, v := range m.verifyRatios() {
		name := "`" + strings.TrimPrefix(v.name, "Benchmark") + "`"
		switch {
		case !v.found:
			w.row(name, "not run", "—", verifyTarget, notMeasured)
		case v.reference == "":
			w.row(name, "no SHA-256 benchmark", "—", verifyTarget, notMeasured)
		default:
			w.row(name+" ÷ `"+v.reference+"`", fmt.Sprintf("%.2f×", v.ratio), num(v.allocs), verifyTarget, v.verdict())
		}
	}
	w.line("")
}

func medianCell(b *microBench, unit string) string {
	v, ok := b.median(unit)
	if !ok {
		return "—"
	}
	return num(v)
}

func (r *report) writeHTTP(w *mdWriter, c config) {
	w.line("## 2. Forward-auth over HTTP vs a bare `net/http` handler")
	w.line("")
	h := r.http
	if h == nil {
		w.line("Not run.")
		w.line("")
		return
	}
	w.line("Two servers in the benchmark process on 127.0.0.1 with the same TLS setup (TLS 1.2+, ALPN `http/1.1` only, "+
		"one ECDSA P-256 certificate from `test/utils.WriteServingCert`) and the same `http.Server` settings "+
		"(those of controller-runtime's webhook server): a bare handler that returns 200, and the auth server's "+
		"`Handler()` with %d keys in its index. The load generator, in the same process and on the same cores, "+
		"keeps %d HTTP/1.1 keep-alive connections; each sends `GET /auth` with `Authorization: Bearer <a valid token>` "+
		"(one key per connection), and the bare handler gets the identical bytes. Every response must be 200.",
		c.httpKeys, c.httpConns)
	w.line("")
	if h.err != nil {
		w.line("**Failed**: %s", h.err)
		w.line("")
	}
	if len(h.closed) > 0 {
		w.line("**Closed loop** (max throughput): %d rounds of %s per server, alternating which goes first.",
			len(h.closed), c.httpClosed)
		w.line("")
		w.table("round", "bare req/s", "auth server req/s", "ratio")
		for i, cr := range h.closed {
			w.row(fmt.Sprint(i+1), fmt.Sprintf("%.0f", cr.bare), fmt.Sprintf("%.0f", cr.ours), fmt.Sprintf("%.2f×", cr.ours/cr.bare))
		}
		w.row("**median**", fmt.Sprintf("%.0f", h.bareRPS), fmt.Sprintf("%.0f", h.oursRPS),
			fmt.Sprintf("**%.2f×** (target ≥ 0.95×: %s)", h.oursRPS/h.bareRPS, verdict(h.oursRPS/h.bareRPS >= minThroughput)))
		w.line("")
	}
	if len(h.open) > 0 {
		w.line("**Open loop** at %.0f req/s (half the bare handler's median max), constant arrival rate, %d rounds of %s "+
			"per server. Latency runs from each request's scheduled send time, so time spent queued behind a slow "+
			"response counts (no coordinated omission).", h.openRate, len(h.open), c.httpOpen)
		w.line("")
		w.table("round", "bare p50", "bare p99", "bare p99.9", "auth p50", "auth p99", "auth p99.9", "p99 ratio", "achieved req/s (bare / auth)")
		for i, o := range h.open {
			w.row(fmt.Sprint(i+1), us(o.bare.p50), us(o.bare.p99), us(o.bare.p999), us(o.ours.p50), us(o.ours.p99), us(o.ours.p999),
				fmt.Sprintf("%.2f×", float64(o.ours.p99)/float64(o.bare.p99)), fmt.Sprintf("%.0f / %.0f", o.bareRate, o.oursRate))
		}
		p99 := float64(h.oursOpen.p99) / float64(h.bareOpen.p99)
		w.row("**median**", us(h.bareOpen.p50), us(h.bareOpen.p99), us(h.bareOpen.p999), us(h.oursOpen.p50), us(h.oursOpen.p99),
			us(h.oursOpen.p999), fmt.Sprintf("**%.2f×** (target ≤ 1.2×: %s)", p99, verdict(p99 <= maxP99Ratio)), "")
		w.line("")
		if h.bareOpen.p99 > 10*h.bareOpen.p50 && h.bareOpen.p999 < 2*h.bareOpen.p99 {
			w.line("p50 is well under the p99, and p99.9 is close to it: the tail is not a per-request cost but a few " +
				"stalls per round, tens of milliseconds long, in which every request waits. Both servers see them " +
				"(rounds swing both ways), which points at the shared machine (see the load average above) rather " +
				"than at either handler.")
			w.line("")
		}
	}
	r.writeHTTPCost(w)
}

// writeHTTPCost says what the auth server does per request that the bare
// handler does not, with the in-process cost when the micro-benchmarks ran.
func (r *report) writeHTTPCost(w *mdWriter) {
	if r.http == nil || r.http.bareRPS == 0 {
		return
	}
	cost := ""
	if r.micro != nil {
		if b := r.micro.find("authserver", "BenchmarkForwardAuth"); b != nil {
			ns, _ := b.median("ns/op")
			allocs, _ := b.median("allocs/op")
			bytes, _ := b.median("B/op")
			cost = fmt.Sprintf(" In process, `BenchmarkForwardAuth` puts that at %s ns, %s allocations and %s B per request "+
				"(with httptest's recorder).", num(ns), num(allocs), num(bytes))
		}
	}
	bare, ours := 1/r.http.bareRPS, 1/r.http.oursRPS
	w.line("Per request, the auth server routes through its ServeMux, bounds the request, reads the token, verifies it, "+
		"writes five identity headers and records metrics; at the median throughputs that costs %.1f µs of the two "+
		"cores' time more than the bare handler (%.1f vs %.1f µs per request, load generator included).%s",
		(ours-bare)*2e6, ours*2e6, bare*2e6, cost)
	w.line("")
}

func (r *report) writeRevoke(w *mdWriter) {
	w.line("## 3. Revocation → 401")
	w.line("")
	s, rv := r.scaleRevoke(), r.revoke
	if s == nil && rv == nil {
		w.line("%s", r.notRunLine())
		w.line("")
		return
	}
	w.line("Each trial checks that `/auth` accepts a key's token, then deletes the ApiKey or sets " +
		"`spec.suspended: true` (a merge patch), and polls `/auth` with the token every 2 ms from the moment the API " +
		"call returned until it answers 401. Two runs: at scale, as SPEC §9 states the target (the summary judges " +
		"this one when it ran), and a light one early in the run.")
	w.line("")
	writeScaleRevoke(w, s)
	r.writeLightRevoke(w, s != nil && s.all.n > 0)
}

// writeScaleRevoke describes the run at scale: on the memory section's
// combined manager, under forward-auth load.
func writeScaleRevoke(w *mdWriter, s *scaleRevokeResult) {
	w.line("### At scale: 100k keys indexed, forward-auth under half load")
	w.line("")
	if s == nil {
		w.line("Not run (it runs in the memory section, §7, on its last combined manager).")
		w.line("")
		return
	}
	w.line("In the memory section (§7), once the combined manager (controller and auth server in one process, as "+
		"`cmd/main.go` runs by default) had every key in its index and its controller had worked through its start-up "+
		"backlog, after its heap was read: %d keys indexed when the trials began. The revoked keys are among those "+
		"written straight into etcd, with the owner and finalizer that admission stamps, so the updates the trials "+
		"and the controller make are the ones admission lets through (the webhooks' matchConditions skip them; a "+
		"delete is not sent to them). A delete is refused as soon as the ApiKey carries its deletionTimestamp; the "+
		"controller then deletes the record and removes its finalizer.", s.keys)
	w.line("")
	if s.offered > 0 {
		w.line("Throughout the trials the load generator of §2 kept forward-auth under load on the same auth server "+
			"(its `/auth` on the manager's webhook server, TLS, HTTP/1.1): %d keep-alive connections, one preloaded "+
			"key each, an open loop at a constant **%.0f req/s offered** (%s), started before the first trial and "+
			"stopped after the last. It answered %.0f req/s over %s, with latency p50 %s, p99 %s, max %s counted from "+
			"each request's scheduled time.", s.conns, s.offered, halfOf(s), s.achieved, secs(s.loadFor),
			us(s.load.p50), us(s.load.p99), us(s.load.mx))
		if s.hereRPS > 0 {
			w.line("Just before the trials, the same generator closed-loop on this manager reached %.0f req/s: the "+
				"offered load was %.0f%% of what this manager could serve then, beside its controller, "+
				"kube-apiserver and etcd on the same cores.", s.hereRPS, 100*s.offered/s.hereRPS)
		}
		if s.achieved < 0.95*s.offered {
			w.line("The answered rate fell short of the offered one, so requests queued behind each other for the " +
				"whole run (see the load's latency): the auth server was saturated, and each trial's probes " +
				"competed with a full queue, which is heavier than half load.")
		}
		w.line("")
	}
	if s.loadErr != nil {
		w.line("**The load failed**: %s", s.loadErr)
		w.line("")
	}
	if s.err != nil {
		w.line("**Failed**: %s", s.err)
		w.line("")
	}
	if s.all.n == 0 {
		return
	}
	w.table("revocation", "trials", "p50", "p99", "max", "target", "result")
	w.row("delete", fmt.Sprint(s.deleted.n), ms(s.deleted.p50), ms(s.deleted.p99), ms(s.deleted.mx), "", "")
	w.row("suspend", fmt.Sprint(s.suspended.n), ms(s.suspended.p50), ms(s.suspended.p99), ms(s.suspended.mx), "", "")
	w.row("**all**", fmt.Sprint(s.all.n), ms(s.all.p50), ms(s.all.p99), ms(s.all.mx), revokeTarget, scaleRevokeVerdict(s))
	w.line("")
	if s.gone > 0 {
		w.line("Every deleted ApiKey was gone (finalizer removed by the controller) %s after the last trial.%s",
			ms(s.gone), p99IsMax(s.all.n))
		w.line("")
	}
}

// writeLightRevoke describes the light run: few keys, no load, controller
// and auth server as two managers.
func (r *report) writeLightRevoke(w *mdWriter, judgedAtScale bool) {
	w.line("### Light: a few keys, no load, controller and auth-only replica apart")
	w.line("")
	rv := r.revoke
	if rv == nil {
		w.line("Not run.")
		w.line("")
		return
	}
	judged := "the summary judges this run, since the one at scale did not run"
	if judgedAtScale {
		judged = "not judged: it shows revocation across two processes and through keys issued by the controller"
	}
	w.line("Controller (with the admission webhooks) and an auth-only replica run as two managers, as the two "+
		"Deployments would. Each trial first creates an ApiKey and waits for Ready and for `/auth` to accept its "+
		"token. The auth server's index held %d keys when the trials began, and nothing else loaded forward-auth "+
		"during them; %s.", r.revokeKeys, judged)
	w.line("")
	if rv.err != nil {
		w.line("**Failed**: %s", rv.err)
		w.line("")
	}
	verdictCell := r.revokeVerdict()
	if judgedAtScale {
		verdictCell = "—"
	}
	w.table("revocation", "trials", "p50", "p99", "max", "target", "result")
	w.row("delete", fmt.Sprint(rv.deleted.n), ms(rv.deleted.p50), ms(rv.deleted.p99), ms(rv.deleted.mx), "", "")
	w.row("suspend", fmt.Sprint(rv.suspended.n), ms(rv.suspended.p50), ms(rv.suspended.p99), ms(rv.suspended.mx), "", "")
	w.row("**all**", fmt.Sprint(rv.all.n), ms(rv.all.p50), ms(rv.all.p99), ms(rv.all.mx), revokeTarget, verdictCell)
	w.line("")
}

func (r *report) writeApply(w *mdWriter) {
	w.line("## 4. Create → Secret delivered and Ready")
	w.line("")
	a := r.apply
	if a == nil {
		w.line("%s", r.notRunLine())
		w.line("")
		return
	}
	w.line("Each trial opens a watch on one new ApiKey, then creates it (as `kubectl apply` would), and stops the clock " +
		"at the first event with `Ready=True` and its Secret present on the API server. It then reads the token and " +
		"polls `/auth` every 2 ms until the auth server accepts it (informational: the token is usable).")
	w.line("")
	w.line("The trials run after bulk issuance, so its keys are present: the auth server's index held %d keys when "+
		"they began. Admission on the creates: %s. SPEC §9 states the target with admission in the path and 10k keys "+
		"present.", r.applyKeys, admissionPath)
	w.line("")
	writeAdmission(w, r.applyAdmission)
	if a.err != nil {
		w.line("**Failed**: %s", a.err)
		w.line("")
	}
	w.table("from the Create call to", "trials", "p50", "p99", "max", "target", "result")
	w.row("Ready=True, Secret present", fmt.Sprint(a.ready.n), ms(a.ready.p50), ms(a.ready.p99), ms(a.ready.mx), applyTarget,
		r.applyVerdict())
	w.row("`/auth` answers 200 (includes reading the Secret)", fmt.Sprint(a.usable.n), ms(a.usable.p50), ms(a.usable.p99),
		ms(a.usable.mx), "—", "")
	w.line("")
}

func (r *report) writeRotate(w *mdWriter) {
	w.line("## 5. Rotation")
	w.line("")
	rt := r.rotate
	if rt == nil {
		w.line("%s", r.notRunLine())
		w.line("")
		return
	}
	w.line("Each trial creates an ApiKey with `spec.rotation.gracePeriod: %s`, waits for Ready, reads the token from "+
		"its Secret and waits for `/auth` to answer 200. It opens a watch on the Secret and starts the clock just "+
		"before patching a new value into the `%s` annotation. Then it does what a consumer does: it takes the "+
		"first Secret event whose token differs (checking that `%s` and `%s` describe that token) and polls "+
		"`/auth` every 2 ms with it until it answers 200.", rt.grace, apikeysv1alpha1.RotateAnnotation,
		apikeysv1alpha1.TokenHashAnnotation, apikeysv1alpha1.TokenHintAnnotation)
	w.line("")
	w.line("For the old token it reads `validUntil` from `status.previousKeys` (once `status.lastRotateRequest` " +
		"shows the new value) and polls `/auth` with it every 2 ms, from the moment the new token was accepted " +
		"until the first 401: every answer before `validUntil` must be 200, and a 401 that arrives before it " +
		"fails the section.")
	w.line("")
	if rt.err != nil {
		w.line("**Failed**: %s", rt.err)
		w.line("")
	}
	w.table("from", "to", "trials", "p50", "p99", "max", "target", "result")
	w.row("annotation patch sent", "Secret watch event with the new token", fmt.Sprint(rt.delivered.n),
		ms(rt.delivered.p50), ms(rt.delivered.p99), ms(rt.delivered.mx), "—", "")
	w.row("annotation patch sent", "`/auth` answers 200 for the new token", fmt.Sprint(rt.usable.n),
		ms(rt.usable.p50), ms(rt.usable.p99), ms(rt.usable.mx), "p50 < 250 ms",
		verdict(rt.err == nil && rt.usable.n > 0 && rt.usable.p50 < maxRotateUsable))
	w.row("old token's `validUntil`", "first 401 for it arrives (upper bound)", fmt.Sprint(rt.refused.n),
		signedMs(rt.refused.p50), signedMs(rt.refused.p99), signedMs(rt.refused.mx), "≤ 1 s, every trial",
		verdict(rt.err == nil && rt.refused.n > 0 && rt.refused.mx <= maxRotateRefused))
	w.row("old token's `validUntil`", "last 200 for it was sent (lower bound)", fmt.Sprint(rt.lastAccepted.n),
		signedMs(rt.lastAccepted.p50), signedMs(rt.lastAccepted.p99), signedMs(rt.lastAccepted.mx), "—", "")
	w.line("")
	if rt.usable.n == 0 {
		return
	}
	w.line("The new token's record is created before the Secret is written, so once the consumer had the new token "+
		"the auth server accepted it after %s at the median (%s at most): the rotation's latency is the "+
		"controller's and the Secret's, not the index's.", ms(rt.afterDelivery.p50), ms(rt.afterDelivery.mx))
	w.line("")
	w.line("What the clock can and cannot say. Records hold whole seconds, so the controller writes `validUntil` "+
		"as the time it rotated plus the grace period, rounded up to the next second: never less than the grace "+
		"period. Measured from the annotation patch, the grace that played out was between %.3f s and %.3f s for "+
		"a `gracePeriod` of %s: up to 1 s longer because of the rounding (the trials rotate at points spread "+
		"evenly across the second to show it), and longer when the controller acted late. That moves the grace end; "+
		"it does not blur the measurement, which is against the `validUntil` actually written. "+
		"The auth server compares each request's time with `validUntil`, so nothing has to happen in the "+
		"controller at the grace end, and it runs in this process, on the same clock as the probes. "+
		"The refusal happened between the last 200's send time and the first 401's arrival, so the last two rows "+
		"bracket it; the bracket is one probe interval (2 ms, or a round trip when that is longer) plus "+
		"one round trip wide. %d old-token probes in all.%s",
		rt.graceMin.Seconds(), rt.graceMax.Seconds(), rt.grace, rt.oldPolls, p99IsMax(rt.usable.n))
	w.line("")
}

func (r *report) writeIssue(w *mdWriter) {
	w.line("## 6. Bulk issuance")
	w.line("")
	is := r.issue
	if is == nil {
		w.line("%s", r.notRunLine())
		w.line("")
		return
	}
	w.line("Just before the ApiKeys, the same %d parallel clients (one client, rest config without client-side rate "+
		"limit) create %d plain ConfigMaps: that is the API server's raw create rate in this run. Then they create %d "+
		"ApiKeys at once, with the controller and an auth server running; a watch on the namespace counts keys that "+
		"reach Ready=True, and the auth server's index is checked for the new tokens. Times are from the first Create "+
		"call. The controller is built as `cmd/main.go` builds it, with `ApiKeyReconciler.MaxConcurrentReconciles: %d` "+
		"(`--max-concurrent-reconciles`) and its rest config at QPS %g, burst %d (`--kube-api-qps`, `--kube-api-burst`).",
		is.workers, is.keys, is.keys, is.reconcilers, is.qps, is.burst)
	w.line("")
	w.line("Admission on the ApiKey creates: %s.", admissionPath)
	w.line("")
	writeAdmission(w, r.issueAdmission)
	if is.err != nil {
		w.line("**Failed**: %s", is.err)
		w.line("")
	}
	if is.gaveUp {
		w.line("The benchmark stopped waiting after %s (`-issue-timeout`); the keys still pending were not waited for.",
			secs(is.waited))
		w.line("")
	}
	w.table("keys", "ConfigMaps created", "ConfigMaps/s", "all ApiKey Create calls returned", "Ready at 60 s", "all Ready",
		"auth server holds every token", "keys/s", "ratio", "target", "result")
	s := r.issueSummary()
	allReady := secsOrDash(is.ready)
	if is.gaveUp {
		allReady = fmt.Sprintf("not within %s (%d Ready); ≈ %.0f s at this rate", secs(is.waited), is.readyCount,
			projected(is).Seconds())
	}
	w.row(fmt.Sprint(is.keys), secsOrDash(is.configMaps), fmt.Sprintf("%.0f", is.rawRate()), secsOrDash(is.created),
		fmt.Sprint(is.readyAtTarget), allReady, secsOrDash(is.indexed), fmt.Sprintf("%.0f", is.rate()),
		fmt.Sprintf("**%.2f×**", is.ratio()), "≥ 0.25×", s[3])
	w.line("")
	writeWrites(w, is)
	writeIssueCPU(w, is)
	if is.keys == issueTargetCount && is.ready > 0 {
		w.line("SPEC §9 adds that 10,000 keys in < 60 s on 2 cores follows from the ratio: here %s (%s).",
			secs(is.ready), verdict(is.ready < maxIssueTime))
		w.line("")
	}
}

// writeAdmission tells what admission cost the creates of a section.
func writeAdmission(w *mdWriter, a *admissionCost) {
	if a == nil {
		return
	}
	if a.err != nil {
		w.line("What admission cost was not measured: %s.", a.err)
		w.line("")
		return
	}
	w.line("What admission cost these creates, from kube-apiserver's own histograms (the call, TLS and decoding " +
		"included; p99 is the upper bound of the histogram bucket that holds it):")
	w.line("")
	w.table("admission step", "calls", "mean", "p99 ≤")
	for _, st := range a.steps {
		if st.calls == 0 {
			w.row(st.what, "none recorded (its matchConditions leave these creates out)", "—", "—")
			continue
		}
		w.row(st.what, fmt.Sprint(st.calls), ms(st.mean), ms(st.p99))
	}
	w.line("")
}

// writeIssueCPU compares what a ConfigMap create and an issued key cost in
// CPU, which is what bounds the ratio once the writes per key are few.
func writeIssueCPU(w *mdWriter, is *issueResult) {
	cm, key := is.configMapCPU, is.keyCPU
	if cm.apiServer <= 0 || key.apiServer <= 0 {
		return
	}
	w.line("CPU time per object, from kube-apiserver's and etcd's `process_cpu_seconds_total` and this process's " +
		"rusage (the controller, the auth server, the webhooks and the clients all run here), over the ConfigMap " +
		"creates and over the issuance (first create to last Ready):")
	w.line("")
	w.table("CPU per", "kube-apiserver", "etcd", "this process", "all three")
	all := func(t cpuTimes) time.Duration { return t.apiServer + t.etcd + t.bench }
	w.row("ConfigMap created", us(cm.apiServer), us(cm.etcd), us(cm.bench), us(all(cm)))
	w.row("ApiKey issued", us(key.apiServer), us(key.etcd), us(key.bench), us(all(key)))
	w.row("ratio", fmt.Sprintf("%.1f×", key.apiServer.Seconds()/cm.apiServer.Seconds()),
		fmt.Sprintf("%.1f×", key.etcd.Seconds()/cm.etcd.Seconds()), fmt.Sprintf("%.1f×", key.bench.Seconds()/cm.bench.Seconds()),
		fmt.Sprintf("%.1f×", all(key).Seconds()/all(cm).Seconds()))
	w.line("")
	w.line("With the two cores saturated, the ratio of keys/s to ConfigMaps/s can be no better than the inverse of " +
		"the last column: four writes per key meet SPEC's count, but three of them are to custom resources (JSON, " +
		"schema and CEL validation, managed fields, unstructured decoding) and each is sent to every informer that " +
		"watches it, so a key costs the API server far more than four ConfigMap creates.")
	w.line("")
}

// writeWrites lists the writes kube-apiserver served during bulk issuance.
func writeWrites(w *mdWriter, is *issueResult) {
	if len(is.writes) == 0 {
		return
	}
	w.line("Writes kube-apiserver served during the section (`apiserver_request_total`), the ConfigMaps included: "+
		"**%.2f writes per key** on ApiKeys, records, Secrets and Events, the user's create included (SPEC §9: ≤ 4).",
		is.writes.perKey(is.keys))
	w.line("")
	w.table("verb", "resource", "requests", "per key")
	for _, c := range is.writes {
		if c.n*100 < is.keys {
			continue // the API server's own bookkeeping, e.g. leases
		}
		w.row(c.verb, c.resource, fmt.Sprint(c.n), fmt.Sprintf("%.2f", float64(c.n)/float64(is.keys)))
	}
	w.line("")
}

func (r *report) writeHeap(w *mdWriter) {
	w.line("## 7. Memory per key, in each mode")
	w.line("")
	h := r.heap
	if h == nil {
		w.line("%s", r.notRunLine())
		w.line("")
		return
	}
	what := "an ApiKeyRecord only (no ApiKey)"
	if h.withKeys {
		what = "an ApiKey (with what the mutating webhook stamps: the controller's finalizer, spec.owner, the " +
			"Secret's name), its ApiKeyRecord and its Secret"
		if h.withStatus {
			what = "an ApiKey (with what the mutating webhook stamps: the controller's finalizer, spec.owner, the " +
				"Secret's name; and the status the controller writes on issuance), its ApiKeyRecord and its Secret"
		}
	}
	w.line("The cluster holds %d records issued by the controller in the sections above; this section writes %d more "+
		"straight into etcd (not through the controller, which is stopped), each %s, with %d parallel transactions, in %s.",
		h.existing, h.created, what, h.workers, secs(h.createTime))
	if h.budgetHit {
		w.line("**The creation budget ran out before %d records**: the measurement below is at the largest size "+
			"that fitted, with the trend between two sizes.", h.target)
	}
	w.line("")
	w.line("For each size and each mode: a full GC and `runtime.ReadMemStats` (HeapAlloc) in this process; then a " +
		"manager as `cmd/main.go` builds it for that mode is started and waited for until its index holds every " +
		"record; GC and HeapAlloc again. B/key is (synced − before) ÷ records, so it includes the manager's fixed " +
		"baseline; the verdict's number is the slope between the two sizes, which cancels the baseline. The heap " +
		"after the manager stopped shows the memory was its own.")
	w.line("")
	if h.err != nil {
		w.line("**Failed**: %s", h.err)
		w.line("")
	}
	w.line("**%s** replica (`--enable-controller=false`): informers for ApiKeyRecords and ApiKeys, managed fields "+
		"stripped and cached objects trimmed to what the index reads, and the token index.", authOnlyMode)
	w.line("")
	writeHeapSamples(w, h)
	if n := len(h.samples); n > 0 && h.samples[n-1].apikeys > h.samples[n-1].records {
		w.line("Some ApiKeys have no record (keys the bulk issuance section left unissued when it stopped waiting); " +
			"they sit in the ApiKey cache, so B/key including the baseline overstates. The slope between the two " +
			"sizes only counts the keys added in between, each with its record.")
		w.line("")
	}
	if h.indexOnly > 0 {
		w.line("Of that, the token index alone (entries and maps, filled in memory with %d keys): **%.0f B/key**; "+
			"the rest is the informer caches' copies of ApiKeyRecords and ApiKeys.", h.indexOnlyKeys, h.indexOnly)
		w.line("")
	}
	if cr := h.combined; cr != nil {
		w.line("**%s** manager (the default): the controller, with its cache options (ApiKeys and records "+
			"trimmed to what it reads, the metadata of the Secrets it delivered), and the auth server in one "+
			"process. Its baseline is the heap before the first combined manager: a stopped controller leaves "+
			"the metric series of the keys it saw in this process, and the next one reuses them, so they count "+
			"as the manager's. After its index synced, it is waited for until "+
			"its controllers have been handed every key and record and their queues are empty again (the start-up "+
			"backlog is not memory of the keys); the time that took and what stayed queued are in the last columns.",
			combinedMode)
		w.line("")
		if cr.err != nil {
			w.line("**Failed**: %s", cr.err)
			w.line("")
		}
		writeHeapSamples(w, cr)
	}
	w.line("Target %s:", heapTarget)
	w.line("")
	for _, m := range []*heapResult{h.combined, h} {
		if m == nil {
			continue
		}
		if perKey, ok := m.perKey(); ok {
			w.line("- %s: %s (%s).", m.mode, heapVerdict(m, perKey), heapMeasured(m, perKey))
		} else {
			w.line("- %s: %s.", m.mode, notMeasured)
		}
	}
	w.line("")
}

// writeHeapSamples is the table of one mode's samples.
func writeHeapSamples(w *mdWriter, h *heapResult) {
	if len(h.samples) == 0 {
		return
	}
	header := []string{"records", "ApiKeys", "heap before", "heap synced", "B/key (incl. baseline)", "list + sync time",
		"heap after stop"}
	if h.mode == combinedMode {
		header = append(header, "controllers settled in", "left queued")
	}
	w.table(header...)
	for _, s := range h.samples {
		cells := []string{fmt.Sprint(s.records), fmt.Sprint(s.apikeys), mib(s.before), mib(s.synced),
			fmt.Sprintf("**%.0f**", s.perKey()), secs(s.syncTime), mib(s.afterStopped)}
		if h.mode == combinedMode {
			cells = append(cells, secs(s.settleTime), fmt.Sprint(s.backlog))
		}
		w.row(cells...)
	}
	w.line("")
}

func (r *report) notRunLine() string {
	if r.envErr != nil {
		return fmt.Sprintf("**Not run**: the test control plane failed: %s", r.envErr)
	}
	return "Not run."
}

func writeReproduce(w *mdWriter) {
	w.line("## How to reproduce")
	w.line("")
	w.line("```console")
	w.line("make bench")
	w.line("```")
	w.line("")
	w.line("This builds the test control plane if needed (`make envtest`) and runs " +
		"`go run ./hack/bench -out docs/benchmarks.md` with `KUBEBUILDER_ASSETS` pointing at it. " +
		"`go run ./hack/bench -h` lists the durations, trial counts and sizes; `-sections micro,http` runs a subset. " +
		"Controller-runtime and client-go logs go to a temporary file named at the start of the run. " +
		"Numbers move with the machine and its neighbours: compare runs from the same machine.")
	w.line("")
}

func (r *report) writeRaw(w *mdWriter) {
	if r.micro == nil || r.micro.raw == "" {
		return
	}
	w.line("## Appendix: `go test -bench` output")
	w.line("")
	w.line("<details><summary>raw output</summary>")
	w.line("")
	w.line("```")
	w.WriteString(strings.TrimRight(r.micro.raw, "\n") + "\n")
	w.line("```")
	w.line("")
	w.line("</details>")
}

// Number formats.

func num(v float64) string {
	switch {
	case v == float64(int64(v)):
		return fmt.Sprintf("%d", int64(v))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func ms(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// p99IsMax says, for n samples, that the nearest-rank p99 is their maximum.
func p99IsMax(n int) string {
	if n >= 100 {
		return ""
	}
	return fmt.Sprintf(" With %d trials the nearest-rank p99 is the maximum.", n)
}

// signedMs is ms for a duration that may be zero or negative.
func signedMs(d time.Duration) string {
	return fmt.Sprintf("%+.2f ms", float64(d)/float64(time.Millisecond))
}

func us(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	if d < time.Millisecond {
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
	return ms(d)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func secsOrDash(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return secs(d)
}
