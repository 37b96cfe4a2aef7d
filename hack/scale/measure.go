package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/apikey-operator/apikey-operator/hack/internal/harness"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// point is the cluster's footprint after a step of growth: keys have
// their objects up to and including kind (filled in the order of kinds),
// or all of them (the sample, an interleaved step).
type point struct {
	kind string
	keys int
	// db is etcd's database size after compaction and defragmentation.
	db int64
	// heap is kube-apiserver's live heap after a collection, once stable
	// (after heapWait); firstHeap the first reading. apiRSS and etcdRSS
	// are the two processes' resident sets.
	heap, firstHeap, apiRSS, etcdRSS uint64
	heapWait                         time.Duration
}

// measurePoint compacts and defragments etcd, then reads kube-apiserver's
// heap every heapPoll until two readings agree within 1% (at most
// e.settle): its watch cache keeps snapshots of recent revisions until it
// learns of a compaction, so the first readings after a burst of writes
// run high.
func (e *env) measurePoint(ctx context.Context, kind string, keys int) (point, error) {
	p := point{kind: kind, keys: keys}
	var err error
	if p.db, err = e.etcd.CompactDefrag(ctx); err != nil {
		return p, err
	}
	begin := time.Now()
	for {
		time.Sleep(heapPoll)
		heap, err := e.apiserverHeap(ctx)
		if err != nil {
			return p, err
		}
		if p.firstHeap == 0 {
			p.firstHeap = heap
		}
		stable := p.heap != 0 && math.Abs(float64(heap)-float64(p.heap)) < 0.01*float64(p.heap)
		p.heap, p.heapWait = heap, time.Since(begin)
		if stable || p.heapWait >= e.settle {
			break
		}
	}
	if p.apiRSS, err = rssBytes(e.apiserverPID); err != nil {
		return p, err
	}
	p.etcdRSS, err = rssBytes(e.etcdPID)
	return p, err
}

// heapPoll is the interval between readings of kube-apiserver's heap.
const heapPoll = 10 * time.Second

// listPath is where kube-apiserver lists each kind.
var listPath = map[kind]string{
	recordKind: "/apis/apikeys.dev/v1alpha1/apikeyrecords",
	apikeyKind: "/apis/apikeys.dev/v1alpha1/namespaces/" + namespace + "/apikeys",
	secretKind: "/api/v1/namespaces/" + namespace + "/secrets",
}

// listPage is the part of a List response that paging reads.
type listPage struct {
	Metadata struct {
		Continue           string `json:"continue"`
		RemainingItemCount *int64 `json:"remainingItemCount"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

// awaitCount waits until a consistent List of k shows want objects: then
// kube-apiserver's watch cache holds everything written to etcd.
func (e *env) awaitCount(ctx context.Context, k kind, want int) error {
	got := 0
	err := harness.PollUntil(ctx, 200*time.Millisecond, 2*time.Minute, func() (bool, error) {
		body, err := e.raw.Get().AbsPath(listPath[k]).Param("limit", "1").DoRaw(ctx)
		if err != nil {
			return false, err
		}
		var page listPage
		if err := json.Unmarshal(body, &page); err != nil {
			return false, err
		}
		got = len(page.Items)
		if page.Metadata.RemainingItemCount != nil {
			got += int(*page.Metadata.RemainingItemCount)
		} else if page.Metadata.Continue != "" {
			l, err := e.timeList(ctx, k, 0)
			if err != nil {
				return false, err
			}
			got = l.items
		}
		return got == want, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver lists %d %ss, want %d: %w", got, k.name, want, err)
	}
	return nil
}

// listTiming is one full List of a kind, unpaged or page by page.
type listTiming struct {
	took         time.Duration
	bytes, items int
	pages        int
	// apiserverCPU is the CPU time kube-apiserver used meanwhile: with
	// nothing else asking it for work, the List's cost, whatever the load
	// on the machine.
	apiserverCPU time.Duration
}

// timeList lists k completely, limit objects a page (0: one request), as
// JSON without decoding the objects, and times the requests alone.
func (e *env) timeList(ctx context.Context, k kind, limit int) (listTiming, error) {
	var l listTiming
	cpuBefore, err := cpuTime(e.apiserverPID)
	if err != nil {
		return l, err
	}
	cont := ""
	for {
		req := e.raw.Get().AbsPath(listPath[k])
		if limit > 0 {
			req = req.Param("limit", strconv.Itoa(limit))
		}
		if cont != "" {
			req = req.Param("continue", cont)
		}
		begin := time.Now()
		body, err := req.DoRaw(ctx)
		l.took += time.Since(begin)
		if err != nil {
			return l, err
		}
		var page listPage
		if err := json.Unmarshal(body, &page); err != nil {
			return l, err
		}
		l.pages++
		l.bytes += len(body)
		l.items += len(page.Items)
		if cont = page.Metadata.Continue; cont == "" {
			cpuAfter, err := cpuTime(e.apiserverPID)
			l.apiserverCPU = cpuAfter - cpuBefore
			return l, err
		}
	}
}

// listResult is the median of several timed Lists of one kind at one size.
type listResult struct {
	kind           string
	keys           int
	unpaged, paged listTiming
	pageSize, runs int
	// failed counts the Lists that ended in an error (kube-apiserver cuts
	// a response that outlasts its --request-timeout); lastErr is the last.
	failed  int
	lastErr string
}

func (e *env) measureLists(ctx context.Context, c config, keys int) []listResult {
	// What an auth replica lists; the controller lists Secrets as metadata.
	listed := []kind{recordKind, apikeyKind}
	out := make([]listResult, 0, len(listed))
	for _, k := range listed {
		r := listResult{kind: k.name, keys: keys, pageSize: c.pageSize, runs: c.listRuns}
		r.unpaged = e.timedLists(ctx, &r, k, 0, c.listRuns)
		// Paged, timed once: a run stays within about ten minutes.
		r.paged = e.timedLists(ctx, &r, k, c.pageSize, 1)
		out = append(out, r)
	}
	return out
}

// timedLists lists k n times and returns the median of those that
// succeeded, counting the others in r.
func (e *env) timedLists(ctx context.Context, r *listResult, k kind, limit, n int) listTiming {
	var runs []listTiming
	for range n {
		l, err := e.timeList(ctx, k, limit)
		if err == nil && l.items != r.keys {
			err = fmt.Errorf("listed %d %ss, want %d", l.items, k.name, r.keys)
		}
		if err != nil {
			r.failed++
			r.lastErr = err.Error()
			harness.Progress("  List of %ss (limit %d) failed after %s: %v", k.name, limit, l.took.Round(time.Millisecond), err)
			continue
		}
		runs = append(runs, l)
	}
	if len(runs) == 0 {
		return listTiming{}
	}
	slices.SortFunc(runs, func(a, b listTiming) int { return int(a.took - b.took) })
	return runs[len(runs)/2]
}

// replicaResult is an auth-only replica started against the cluster: how
// long until its index held every token, and the heap it took.
type replicaResult struct {
	keys             int
	syncTime         time.Duration
	heapBefore, heap uint64 // this process's live heap before and once synced
	indexed          int
	// apiserverCPU and replicaCPU are the CPU time kube-apiserver and this
	// process (the replica) used until the index synced.
	apiserverCPU, replicaCPU time.Duration
}

// measureReplica starts an auth-only manager as cmd/main.go builds it
// (--enable-controller=false: informers for records and ApiKeys, managed
// fields stripped, cached objects trimmed to what the index reads) and
// waits until its index holds every record.
func (e *env) measureReplica(ctx context.Context, keys int) (replicaResult, error) {
	r := replicaResult{keys: keys}
	certDir, err := os.MkdirTemp("", "apikey-scale-certs-")
	if err != nil {
		return r, err
	}
	defer func() { _ = os.RemoveAll(certDir) }()
	if _, err := utils.WriteServingCert(certDir); err != nil {
		return r, err
	}
	port, err := utils.FreePort()
	if err != nil {
		return r, err
	}
	mgr, err := ctrl.NewManager(e.cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: authserver.CacheOptions()},
		WebhookServer:          webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: certDir}),
	})
	if err != nil {
		return r, err
	}
	auth := authserver.NewServer(authserver.NewIndex(), authserver.Options{})
	if err := auth.SetupWithManager(mgr); err != nil {
		return r, err
	}
	r.heapBefore = harness.LiveHeap()
	apiBefore, err := cpuTime(e.apiserverPID)
	if err != nil {
		return r, err
	}
	ownBefore, err := cpuTime(os.Getpid())
	if err != nil {
		return r, err
	}
	begin := time.Now()
	m := harness.StartManager(ctx, mgr)
	err = awaitSynced(ctx, m, auth.Index())
	r.syncTime = time.Since(begin)
	apiAfter, errAPI := cpuTime(e.apiserverPID)
	ownAfter, errOwn := cpuTime(os.Getpid())
	r.apiserverCPU, r.replicaCPU = apiAfter-apiBefore, ownAfter-ownBefore
	if err == nil {
		r.heap = harness.LiveHeap()
		r.indexed = auth.Index().Len()
	}
	return r, errors.Join(err, errAPI, errOwn, m.Stop())
}

func awaitSynced(ctx context.Context, m *harness.Manager, ix *authserver.Index) error {
	err := harness.PollUntil(ctx, 5*time.Millisecond, 5*time.Minute, func() (bool, error) {
		if err := m.Stopped(); err != nil {
			return false, err
		}
		return ix.Synced(), nil
	})
	if err != nil {
		return fmt.Errorf("the auth replica's index did not sync: %w", err)
	}
	return nil
}
