package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"sort"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"

	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
)

// admissionCost is what admission cost the ApiKey creates of one section,
// from kube-apiserver's own histograms: the time each of the operator's
// admission webhooks and policies took, per create, as
// kube-apiserver measured it (the call, TLS and decoding included).
type admissionCost struct {
	Steps []admissionStep
	Err   error
}

// admissionStep is one admission plugin's calls during the section.
type admissionStep struct {
	What  string // e.g. "mutating webhook mapikey-v1alpha1.apikeys.dev"
	Calls uint64
	Mean  time.Duration
	// p99 is the upper bound of the histogram bucket that holds the 99th
	// percentile: kube-apiserver keeps buckets, not samples.
	P99 time.Duration
}

// defaultsPolicyStep names the admission step the apply target needs to
// see: the policy that stamps every create.
const defaultsPolicyStep = "defaults MutatingAdmissionPolicy"

// callsOf is how many calls the step named what saw.
func (a *admissionCost) callsOf(what string) uint64 {
	for _, s := range a.Steps {
		if s.What == what {
			return s.Calls
		}
	}
	return 0
}

// admissionSeries picks the histograms that time ApiKey creates: each
// webhook by its name, each policy by its name.
var admissionSeries = []struct {
	what, metric string
	labels       map[string]string
}{
	{defaultsPolicyStep, "apiserver_mutating_admission_policy_check_duration_seconds",
		map[string]string{"policy": "apikey-operator-defaults-policy"}},
	{"mutating webhook `mapikey-v1alpha1.apikeys.dev`", "apiserver_admission_webhook_admission_duration_seconds",
		map[string]string{"name": "mapikey-v1alpha1.apikeys.dev", "operation": "CREATE", "type": "admit"}},
	{"validating webhook `vapikey-v1alpha1.apikeys.dev`", "apiserver_admission_webhook_admission_duration_seconds",
		map[string]string{"name": "vapikey-v1alpha1.apikeys.dev", "operation": "CREATE", "type": "validating"}},
	{"owner ValidatingAdmissionPolicy", "apiserver_validating_admission_policy_check_duration_seconds",
		map[string]string{"policy": "apikey-operator-owner-policy"}},
}

// scrapeAPIServer reads kube-apiserver's /metrics.
func (e *env) scrapeAPIServer(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	cs, err := kubernetes.NewForConfig(e.cfg)
	if err != nil {
		return nil, err
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading kube-apiserver's /metrics: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing kube-apiserver's /metrics: %w", err)
	}
	return families, nil
}

// scrapeAdmission returns kube-apiserver's histograms of admissionSeries,
// in that order (nil where a series has no samples yet).
func (e *env) scrapeAdmission(ctx context.Context) ([]*dto.Histogram, error) {
	families, err := e.scrapeAPIServer(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*dto.Histogram, len(admissionSeries))
	for i, s := range admissionSeries {
		out[i] = sumHistograms(families[s.metric], s.labels)
	}
	return out, nil
}

// sumHistograms adds up the series of f whose labels include want (e.g.
// rejected true and false).
func sumHistograms(f *dto.MetricFamily, want map[string]string) *dto.Histogram {
	if f == nil {
		return nil
	}
	var sum *dto.Histogram
	for _, m := range f.GetMetric() {
		if !hasLabels(m, want) || m.GetHistogram() == nil {
			continue
		}
		h := m.GetHistogram()
		if sum == nil {
			sum = &dto.Histogram{SampleCount: new(uint64), SampleSum: new(float64)}
			for _, b := range h.GetBucket() {
				sum.Bucket = append(sum.Bucket, &dto.Bucket{UpperBound: b.UpperBound, CumulativeCount: new(uint64)})
			}
		}
		*sum.SampleCount += h.GetSampleCount()
		*sum.SampleSum += h.GetSampleSum()
		for i, b := range h.GetBucket() {
			if i < len(sum.Bucket) {
				*sum.Bucket[i].CumulativeCount += b.GetCumulativeCount()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(want)
}

// admissionBetween is what admission cost between two scrapes.
func admissionBetween(before, after []*dto.Histogram) []admissionStep {
	steps := make([]admissionStep, 0, len(admissionSeries))
	for i, s := range admissionSeries {
		step := admissionStep{What: s.what}
		if a := after[i]; a != nil {
			b := before[i]
			step.Calls = a.GetSampleCount() - b.GetSampleCount()
			if step.Calls > 0 {
				step.Mean = seconds((a.GetSampleSum() - b.GetSampleSum()) / float64(step.Calls))
				step.P99 = bucketQuantile(0.99, b, a, step.Calls)
			}
		}
		steps = append(steps, step)
	}
	return steps
}

// bucketQuantile is the upper bound of the bucket holding quantile q of the
// samples added between before (may be nil) and after.
func bucketQuantile(q float64, before, after *dto.Histogram, n uint64) time.Duration {
	rank := uint64(math.Ceil(q * float64(n)))
	buckets := after.GetBucket()
	i := sort.Search(len(buckets), func(i int) bool {
		c := buckets[i].GetCumulativeCount()
		if before != nil && i < len(before.GetBucket()) {
			c -= before.GetBucket()[i].GetCumulativeCount()
		}
		return c >= rank
	})
	if i == len(buckets) {
		return time.Duration(math.MaxInt64) // beyond the last bucket
	}
	return seconds(buckets[i].GetUpperBound())
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// measureAdmission runs section and returns what admission cost it.
func (e *env) measureAdmission(ctx context.Context, section func()) *admissionCost {
	before, err := e.scrapeAdmission(ctx)
	if err != nil {
		section()
		return &admissionCost{Err: err}
	}
	section()
	after, err := e.scrapeAdmission(ctx)
	if err != nil {
		return &admissionCost{Err: err}
	}
	for i := range before {
		if before[i] == nil {
			before[i] = &dto.Histogram{}
		}
	}
	return &admissionCost{Steps: admissionBetween(before, after)}
}

// apiRequests is how many requests of some verbs kube-apiserver served
// during a section, by verb and resource (subresource after a slash),
// largest first.
type apiRequests []requestCount

// requestCount is one verb on one resource.
type requestCount struct {
	verb, resource string
	N              int
}

// writeVerbs are the verbs of apiserver_request_total that write; readVerbs
// those that read, but for watches.
var (
	writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "DELETE": true, "APPLY": true}
	readVerbs  = map[string]bool{"GET": true, "LIST": true}
)

// scrapeRequests reads apiserver_request_total, summed over codes, scopes
// and components, by verb and resource.
func (e *env) scrapeRequests(ctx context.Context) (map[[2]string]float64, error) {
	families, err := e.scrapeAPIServer(ctx)
	if err != nil {
		return nil, err
	}
	out := map[[2]string]float64{}
	for _, m := range families["apiserver_request_total"].GetMetric() {
		var verb, res, sub string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "verb":
				verb = l.GetValue()
			case "resource":
				res = l.GetValue()
			case "subresource":
				sub = l.GetValue()
			}
		}
		if sub != "" {
			res += "/" + sub
		}
		out[[2]string{verb, res}] += m.GetCounter().GetValue()
	}
	return out, nil
}

// requestsBetween is the requests of verbs counted between two scrapes.
func requestsBetween(before, after map[[2]string]float64, verbs map[string]bool) apiRequests {
	var w apiRequests
	for k, v := range after {
		if n := int(v - before[k]); n > 0 && verbs[k[0]] {
			w = append(w, requestCount{verb: k[0], resource: k[1], N: n})
		}
	}
	sort.Slice(w, func(i, j int) bool {
		if w[i].N != w[j].N {
			return w[i].N > w[j].N
		}
		return w[i].resource+w[i].verb < w[j].resource+w[j].verb
	})
	return w
}

// issuanceResources are what issuing a key writes: the user's ApiKey, the
// controller's record, Secret, status and any Event.
var issuanceResources = map[string]bool{
	"apikeys": true, "apikeys/status": true, "apikeyrecords": true, "apikeyrecords/status": true,
	"secrets": true, "events": true,
}

// perKey is the requests to issuanceResources, per key issued.
func (w apiRequests) perKey(keys int) float64 {
	total := 0
	for _, c := range w {
		if issuanceResources[c.resource] {
			total += c.N
		}
	}
	return float64(total) / float64(keys)
}

// cpuTimes is the CPU time used so far by the control plane's processes
// and by this one (the controller, the auth server, the webhooks and the
// load generator all run here).
type cpuTimes struct {
	apiServer, etcd, bench time.Duration
}

// cpuNow reads kube-apiserver's and etcd's process_cpu_seconds_total and
// this process's rusage.
func (e *env) cpuNow(ctx context.Context) (cpuTimes, error) {
	var t cpuTimes
	families, err := e.scrapeAPIServer(ctx)
	if err != nil {
		return t, err
	}
	f := families["process_cpu_seconds_total"]
	if f == nil || len(f.GetMetric()) == 0 {
		return t, errors.New("kube-apiserver's /metrics has no process_cpu_seconds_total")
	}
	t.apiServer = seconds(f.GetMetric()[0].GetCounter().GetValue())
	if t.etcd, err = e.etcdCPU(ctx); err != nil {
		return t, err
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return t, err
	}
	t.bench = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return t, nil
}

// etcdCPU reads etcd's process_cpu_seconds_total from its /metrics.
func (e *env) etcdCPU(ctx context.Context) (time.Duration, error) {
	u := *e.testEnv.ControlPlane.Etcd.URL
	u.Path = "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reading etcd's /metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("parsing etcd's /metrics: %w", err)
	}
	f := families["process_cpu_seconds_total"]
	if f == nil || len(f.GetMetric()) == 0 {
		return 0, errors.New("etcd's /metrics has no process_cpu_seconds_total")
	}
	return seconds(f.GetMetric()[0].GetCounter().GetValue()), nil
}

// sub is the CPU time used between b and t.
func (t cpuTimes) sub(b cpuTimes) cpuTimes {
	return cpuTimes{apiServer: t.apiServer - b.apiServer, etcd: t.etcd - b.etcd, bench: t.bench - b.bench}
}

// per divides each time by n.
func (t cpuTimes) per(n int) cpuTimes {
	d := time.Duration(n)
	return cpuTimes{apiServer: t.apiServer / d, etcd: t.etcd / d, bench: t.bench / d}
}

// profileAPIServer starts a CPU profile of kube-apiserver (its
// /debug/pprof/profile, on by default) and returns a function that waits
// for it and writes it to path. The profile covers the minute from now
// (kube-apiserver answers only at its end, so a shorter run waits for it).
func (e *env) profileAPIServer(ctx context.Context, path string) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		cs, err := kubernetes.NewForConfig(e.cfg)
		if err != nil {
			harness.Progress("  kube-apiserver profile: %v", err)
			return
		}
		raw, err := cs.Discovery().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", "60").Timeout(2 * time.Minute).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(path, raw, 0o600)
		}
		if err != nil {
			harness.Progress("  kube-apiserver profile: %v", err)
			return
		}
		harness.Progress("  wrote kube-apiserver's CPU profile to %s", path)
	}()
	return func() { <-done }
}
