package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

const samplePoint = "sample"

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// write prints the report as Markdown tables.
func (r *report) write(w io.Writer, c config) {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format+"\n", args...) }
	p("# Scale measurements")
	p("")
	p("Control plane %s (envtest), %d CPUs (GOMAXPROCS %d), %s; the run took %s.",
		r.version, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), r.took.Round(time.Second))
	var sections []string
	for _, s := range allSections {
		if c.sections[s] {
			sections = append(sections, s)
		}
	}
	p("Settings: -sample=%d -sizes=%v -sections=%s -put-workers=%d -list-runs=%d -page-size=%d -reconcilers=%d.",
		c.sample, c.sizes, strings.Join(sections, ","), c.putWorkers, c.listRuns, c.pageSize, c.reconcilers)
	if s := r.sample; s != nil {
		r.writeSample(p, s)
	}
	if len(r.points) > 0 {
		r.writeGrowth(p)
	}
	if len(r.lists) > 0 {
		r.writeLists(p)
	}
	if len(r.replicas) > 0 {
		r.writeReplicas(p)
	}
}

func (r *report) writeSample(p func(string, ...any), s *sampleResult) {
	p("")
	p("## Stored per object")
	p("")
	p("%d keys issued through the admission webhooks and the controller in %s (%.1f keys/s); bytes read back from etcd.",
		s.keys, s.issueTime.Round(time.Millisecond), float64(s.keys)/s.issueTime.Seconds())
	p("")
	p("| object | encoding | objects | etcd key (B) | value (B), mean | min–max |")
	p("| --- | --- | --- | --- | --- | --- |")
	row := func(name, enc string, st sizeStats) {
		p("| %s | %s | %d | %.0f | %.0f | %d–%d |", name, enc, st.count, st.keyBytes, st.valueBytes, st.minValue, st.maxValue)
	}
	row("ApiKey (after issuance)", "JSON", s.apikeys)
	row("ApiKeyRecord, as issued", "JSON", s.records)
	row("ApiKeyRecord, after a last-used flush", "JSON", s.usedRecords)
	row("Secret", "protobuf", s.secrets)
	row("Event (expires after --event-ttl, 1h)", "protobuf", s.events)
	p("")
	p("etcd database, compacted and defragmented: %d B before the sample, %d B after: **%.0f B per key**, events included.",
		s.dbBefore, s.dbAfter, float64(s.dbAfter-s.dbBefore)/float64(s.keys))
}

// writeGrowth prints each step's footprint and its cost per object added:
// each step adds one kind's objects for the keys between two sizes.
func (r *report) writeGrowth(p func(string, ...any)) {
	p("")
	p("## Footprint as the cluster grows")
	p("")
	p("After each step: etcd compacted and defragmented; kube-apiserver's live heap after a GC (`/debug/pprof/heap?gc=1`); " +
		"VmRSS of both processes. Per object: the difference from the step before, over the objects it added.")
	p("")
	p("| step | keys | etcd db | B/object | apiserver heap | B/object | apiserver RSS | B/object | etcd RSS | B/object |")
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	prev, prevSize := r.baseline, 0
	for _, pt := range r.points {
		added := pt.keys - prevSize
		per := func(a, b float64) string {
			if added <= 0 || pt.kind == samplePoint {
				return "—"
			}
			return fmt.Sprintf("%.0f", (b-a)/float64(added))
		}
		step := pt.kind + "s"
		switch pt.kind {
		case samplePoint:
			step = "the sample, issued (all objects)"
		case interleaved:
			step = "all three per key, interleaved (B per key)"
		}
		p("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |", step, pt.keys,
			mib(uint64(pt.db)), per(float64(prev.db), float64(pt.db)),
			mib(pt.heap), per(float64(prev.heap), float64(pt.heap)),
			mib(pt.apiRSS), per(float64(prev.apiRSS), float64(pt.apiRSS)),
			mib(pt.etcdRSS), per(float64(prev.etcdRSS), float64(pt.etcdRSS)))
		if pt.kind == samplePoint || pt.kind == secretKind.name || pt.kind == interleaved {
			prevSize = pt.keys
		}
		prev = pt
	}
}

func (r *report) writeLists(p func(string, ...any)) {
	p("")
	p("## Full List through kube-apiserver")
	p("")
	p("JSON, gzip as client-go negotiates it, objects not decoded; unpaged: median of %d runs, paged: one run.", r.lists[0].runs)
	p("")
	p("| kind | objects | unpaged | µs/object | kube-apiserver CPU, µs/object | body "+
		"| paged (limit %d) | pages | µs/object | kube-apiserver CPU, µs/object |", r.lists[0].pageSize)
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	var failures []string
	for _, l := range r.lists {
		p("| %s | %d | %s | %.1f | %.1f | %s | %s | %d | %.1f | %.1f |", l.kind, l.keys,
			l.unpaged.took.Round(time.Millisecond), perObject(l.unpaged.took, l.keys), perObject(l.unpaged.apiserverCPU, l.keys),
			mib(uint64(l.unpaged.bytes)),
			l.paged.took.Round(time.Millisecond), l.paged.pages, perObject(l.paged.took, l.keys), perObject(l.paged.apiserverCPU, l.keys))
		if l.failed > 0 {
			failures = append(failures, fmt.Sprintf("%d %ss: %d List(s) failed, the last with: %s", l.keys, l.kind, l.failed, l.lastErr))
		}
	}
	for _, f := range failures {
		p("")
		p("%s (a 0s cell had no successful run).", f)
	}
}

func perObject(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

func (r *report) writeReplicas(p func(string, ...any)) {
	p("")
	p("## An auth replica's start")
	p("")
	p("An auth-only manager started against the cluster (records and ApiKeys listed, index filled): time until its index " +
		"held every token, and this process's live heap before and after.")
	p("")
	p("| keys | tokens indexed | sync time | kube-apiserver CPU | replica CPU " +
		"| heap before | heap synced | B/key incl. baseline | B/key, slope |")
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for i, rep := range r.replicas {
		grown := float64(rep.heap) - float64(rep.heapBefore)
		slope := "—"
		if i > 0 {
			prev := r.replicas[i-1]
			before := float64(prev.heap) - float64(prev.heapBefore)
			slope = fmt.Sprintf("%.0f", (grown-before)/float64(rep.keys-prev.keys))
		}
		p("| %d | %d | %s | %s | %s | %s | %s | %.0f | %s |", rep.keys, rep.indexed, rep.syncTime.Round(time.Millisecond),
			rep.apiserverCPU.Round(10*time.Millisecond), rep.replicaCPU.Round(10*time.Millisecond),
			mib(rep.heapBefore), mib(rep.heap), grown/float64(rep.keys), slope)
	}
}
