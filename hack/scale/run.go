package main

import (
	"context"
	"errors"
	"time"

	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
)

// report is everything one run measured.
type report struct {
	version  string
	took     time.Duration
	sample   *sampleResult
	baseline point // before the sample: the empty cluster
	points   []point
	lists    []listResult
	replicas []replicaResult
}

// run starts the control plane, measures the sample, then grows the cluster
// to each size and measures there. It returns what it measured so far
// along with any error.
func run(ctx context.Context, c config) (r *report, err error) {
	harness.Progress("starting the test control plane (envtest, with the admission webhooks)")
	e, err := startEnv(c.settle)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.stop()) }()
	r = &report{version: e.version}
	if r.baseline, err = e.measurePoint(ctx, "", 0); err != nil {
		return r, err
	}

	harness.Progress("issuing %d keys through admission and the controller", c.sample)
	if r.sample, err = runSample(ctx, c, e); err != nil {
		return r, err
	}
	harness.Progress("  issued in %s; per key in etcd: ApiKey %.0f B, record %.0f B, Secret %.0f B",
		r.sample.issueTime.Round(time.Millisecond), r.sample.apikeys.valueBytes,
		r.sample.usedRecords.valueBytes, r.sample.secrets.valueBytes)
	sampled, err := e.measurePoint(ctx, samplePoint, c.sample)
	if err != nil {
		return r, err
	}
	r.points = append(r.points, sampled)
	cl, err := newCloner(ctx, e, r.sample, c.putWorkers)
	if err != nil {
		return r, err
	}
	if err := cl.dump(c.dump); err != nil {
		return r, err
	}
	prev := c.sample
	for i, size := range c.sizes {
		// One kind at a time up to the first size shows what each costs;
		// after that, keys grow as issuance writes them.
		step := interleaved
		if i == 0 {
			step = ""
		}
		if err := r.grow(ctx, e, cl, step, prev, size, c.sections["growth"]); err != nil {
			return r, err
		}
		if err := r.measureAt(ctx, c, e, size); err != nil {
			return r, err
		}
		prev = size
	}
	if c.heapProfile != "" {
		return r, e.saveHeapProfile(ctx, c.heapProfile)
	}
	return r, nil
}

// interleaved is the step that adds every kind at once, key by key.
const interleaved = "interleaved"

// grow copies the objects of keys [from, to) into etcd: one kind at a
// time, or with step interleaved all kinds key by key. With measure, it
// measures the footprint after each kind (or once, interleaved).
func (r *report) grow(ctx context.Context, e *env, cl *cloner, step string, from, to int, measure bool) error {
	steps := [][]kind{issuanceOrder}
	if step != interleaved {
		steps = make([][]kind, 0, len(kinds))
		for _, k := range kinds {
			steps = append(steps, []kind{k})
		}
	}
	for _, ks := range steps {
		name := step
		if name == "" {
			name = ks[0].name
		}
		begin := time.Now()
		if err := cl.load(ctx, ks, from, to); err != nil {
			return err
		}
		for _, k := range ks {
			if err := e.awaitCount(ctx, k, to); err != nil {
				return err
			}
		}
		if !measure {
			harness.Progress("  %d keys, %s (%d written in %s)", to, name, to-from, time.Since(begin).Round(time.Millisecond))
			continue
		}
		p, err := e.measurePoint(ctx, name, to)
		if err != nil {
			return err
		}
		r.points = append(r.points, p)
		harness.Progress("  %d keys, %s (%d written in %s): etcd %s, kube-apiserver heap %s (%s at first, stable after %s), RSS %s; etcd RSS %s",
			to, name, to-from, time.Since(begin).Round(time.Millisecond), mib(uint64(p.db)), mib(p.heap), mib(p.firstHeap),
			p.heapWait.Round(time.Second), mib(p.apiRSS), mib(p.etcdRSS))
	}
	return nil
}

// measureAt times the Lists and an auth replica's sync at size keys, as
// c.sections asks.
func (r *report) measureAt(ctx context.Context, c config, e *env, keys int) error {
	if c.sections["lists"] {
		r.measureLists(ctx, c, e, keys)
	}
	if !c.sections["replica"] {
		return nil
	}
	rep, err := e.measureReplica(ctx, keys)
	if err != nil {
		return err
	}
	r.replicas = append(r.replicas, rep)
	harness.Progress("  auth replica: %d tokens indexed in %s (CPU: kube-apiserver %s, replica %s), heap %s → %s", rep.indexed,
		rep.syncTime.Round(time.Millisecond), rep.apiserverCPU.Round(10*time.Millisecond), rep.replicaCPU.Round(10*time.Millisecond),
		mib(rep.heapBefore), mib(rep.heap))
	return nil
}

func (r *report) measureLists(ctx context.Context, c config, e *env, keys int) {
	lists := e.measureLists(ctx, c, keys)
	r.lists = append(r.lists, lists...)
	for _, l := range lists {
		harness.Progress("  List %d %ss: unpaged %s (%s), paged by %d %s (%d pages)", keys, l.kind,
			l.unpaged.took.Round(time.Millisecond), mib(uint64(l.unpaged.bytes)), l.pageSize,
			l.paged.took.Round(time.Millisecond), l.paged.pages)
	}
}
