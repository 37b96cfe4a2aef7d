package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// heapResult is the auth server's live heap, measured in this process,
// with the cluster holding first about half the records, then all of them.
type heapResult struct {
	target, workers      int
	withKeys, withStatus bool
	// existing records were left by the other sections (real issuance).
	existing int
	// created records (and ApiKeys) were written directly by this section.
	created    int
	createTime time.Duration
	// budgetHit is set when the creation budget ran out before target.
	budgetHit bool
	samples   []heapSample
	// indexOnly is the heap per key of the token index alone, filled in
	// memory with indexOnlyKeys keys: what the informer caches do not hold.
	indexOnly     float64
	indexOnlyKeys int
	err           error
}

// perKey is the verdict's number: the marginal cost between the two sizes
// (per key, beyond the baseline), or with one sample its cost including
// the baseline, which can only be higher.
func (h *heapResult) perKey() (float64, bool) {
	switch n := len(h.samples); n {
	case 0:
		return 0, false
	case 1:
		return h.samples[0].perKey(), true
	default:
		return marginal(h.samples[n-2], h.samples[n-1]), true
	}
}

// heapSample is one measurement: the heap before an auth-only manager was
// built, once its index held every record, and after it stopped.
type heapSample struct {
	records, apikeys             int
	before, synced, afterStopped uint64
	syncTime                     time.Duration
}

// perKey is the heap the auth server added per record, baseline included.
func (s heapSample) perKey() float64 {
	return (float64(s.synced) - float64(s.before)) / float64(s.records)
}

// marginal is the heap per record between two samples: the slope, with the
// manager's fixed baseline cancelled out.
func marginal(a, b heapSample) float64 {
	da := float64(a.synced) - float64(a.before)
	db := float64(b.synced) - float64(b.before)
	return (db - da) / float64(b.records-a.records)
}

func runHeap(ctx context.Context, c config, e *env) *heapResult {
	res := &heapResult{target: c.heapKeys, workers: c.createWorkers, withKeys: c.heapWithKeys, withStatus: c.heapWithKeys && c.heapKeyStatus}
	res.err = measureHeapSizes(ctx, c, e, res)
	if res.err != nil {
		progress("  failed: %v", res.err)
	}
	return res
}

// measureHeapSizes fills the cluster to half the target within half the
// creation budget and measures, then to the target within the rest and
// measures again. If the budget runs out, it measures what it has.
func measureHeapSizes(ctx context.Context, c config, e *env, res *heapResult) error {
	const ns = "bench-heap"
	if err := e.createNamespace(ctx, ns); err != nil {
		return err
	}
	existing, err := e.countRecords(ctx)
	if err != nil {
		return err
	}
	res.existing = existing
	begin := time.Now()
	for phase, size := range []int{c.heapKeys / 2, c.heapKeys} {
		deadline := begin.Add(c.heapCreateLimit * time.Duration(phase+1) / 2)
		if need := size - existing - res.created; need > 0 {
			n, err := e.createHeapKeys(ctx, c, ns, res.created, need, deadline)
			res.created += n
			res.createTime = time.Since(begin)
			if err != nil {
				return err
			}
			res.budgetHit = res.budgetHit || n < need
			progress("  %d records in the cluster (%d created in %s)",
				existing+res.created, res.created, res.createTime.Round(time.Millisecond))
		}
		s, err := e.measureHeap(ctx, c.memProfile)
		if err != nil {
			return err
		}
		res.samples = append(res.samples, s)
		progress("  %d records: %.0f B/key (heap %s → %s), synced in %s",
			s.records, s.perKey(), mib(s.before), mib(s.synced), s.syncTime.Round(time.Millisecond))
	}
	res.indexOnlyKeys = c.heapKeys
	res.indexOnly, err = indexOnlyPerKey(c.heapKeys)
	return err
}

// indexOnlyPerKey fills a token index in memory, as the informers would,
// and returns its own heap per key: entries and maps, not the records and
// ApiKeys they are built from (those are allocated before measuring).
func indexOnlyPerKey(n int) (float64, error) {
	keys := make([]*apikeysv1alpha1.ApiKey, 0, n)
	records := make([]*apikeysv1alpha1.ApiKeyRecord, 0, n)
	if _, err := issueInMemory(n, func(k *apikeysv1alpha1.ApiKey, r *apikeysv1alpha1.ApiKeyRecord) {
		keys, records = append(keys, k), append(records, r)
	}); err != nil {
		return 0, err
	}
	before := liveHeap()
	index := authserver.NewIndex()
	for i := range records {
		index.SetKey(keys[i])
		index.SetRecord(records[i])
	}
	after := liveHeap()
	if index.Len() != n {
		return 0, fmt.Errorf("in-memory index holds %d tokens, want %d", index.Len(), n)
	}
	runtime.KeepAlive(keys)
	runtime.KeepAlive(records)
	return (float64(after) - float64(before)) / float64(n), nil
}

// createHeapKeys writes n keys numbered from first, with createWorkers
// clients, handing out no new work after deadline. It returns how many it
// wrote; running out of time is not an error.
func (e *env) createHeapKeys(ctx context.Context, c config, ns string, first, n int, deadline time.Time) (int, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// The writes themselves use ctx: a deadline must not cut a key from
	// its record half way.
	done, err := parallel(dctx, c.createWorkers, n, func(i int) error {
		return e.createHeapKey(ctx, c, ns, first+i)
	})
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = nil
	}
	return done, err
}

// createHeapKey writes what issuing one key leaves for the auth server to
// cache: the ApiKey (with the controller's finalizer and, optionally, its
// status) and its record. The token is generated and dropped at once.
func (e *env) createHeapKey(ctx context.Context, c config, ns string, i int) error {
	key := benchKey(ns, fmt.Sprintf("heap-%06d", i))
	if c.heapWithKeys {
		key.Finalizers = []string{controller.Finalizer}
		if err := e.client.Create(ctx, key); err != nil {
			return err
		}
	} else {
		key.UID = uuid.NewUUID()
	}
	tok, err := token.Generate(apikeysv1alpha1.DefaultPrefix)
	if err != nil {
		return err
	}
	rec := recordFor(tok, key, time.Now())
	if err := e.client.Create(ctx, rec); err != nil {
		return err
	}
	if c.heapWithKeys && c.heapKeyStatus {
		key.Status = issuedStatus(key, rec)
		return e.client.Status().Update(ctx, key)
	}
	return nil
}

// measureHeap starts an auth-only manager against the cluster as it is,
// waits until its index holds every record, and reads the live heap before
// and after (each after a full GC).
func (e *env) measureHeap(ctx context.Context, profile string) (heapSample, error) {
	var s heapSample
	var err error
	if s.records, err = e.countRecords(ctx); err != nil {
		return s, err
	}
	if s.apikeys, err = e.countAPIKeys(ctx); err != nil {
		return s, err
	}
	// The auth server's metrics follow the latest Server's index; point
	// them at an empty one so an earlier server's index is not counted in
	// the baseline and then freed during the measurement.
	authserver.NewServer(authserver.NewIndex(), authserver.Options{})
	s.before = liveHeap()

	start := time.Now()
	m, auth, err := e.startAuth(ctx)
	if err != nil {
		return s, err
	}
	err = pollUntil(ctx, 10*time.Millisecond, 3*time.Minute, func() (bool, error) {
		return auth.Index().Len() >= s.records, nil
	})
	s.syncTime = time.Since(start)
	s.synced = liveHeap()
	if profile != "" {
		if perr := writeHeapProfile(profile); perr != nil {
			progress("  could not write the heap profile: %v", perr)
		}
	}
	if got := auth.Index().Len(); err == nil && got != s.records {
		err = fmt.Errorf("index holds %d tokens, the cluster %d records", got, s.records)
	}
	runtime.KeepAlive(auth)
	if stopErr := m.stop(); err == nil {
		err = stopErr
	}
	authserver.NewServer(authserver.NewIndex(), authserver.Options{})
	s.afterStopped = liveHeap()
	return s, err
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func (e *env) countRecords(ctx context.Context) (int, error) {
	return e.count(ctx, "ApiKeyRecordList")
}

func (e *env) countAPIKeys(ctx context.Context) (int, error) {
	return e.count(ctx, "ApiKeyList")
}

// count asks the API server how many objects of a list kind exist, reading
// one item and the remaining count rather than the whole list.
func (e *env) count(ctx context.Context, listKind string) (int, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(apikeysv1alpha1.GroupVersion.WithKind(listKind))
	if err := e.client.List(ctx, list, client.Limit(1)); err != nil {
		return 0, err
	}
	n := len(list.Items)
	if list.RemainingItemCount != nil {
		n += int(*list.RemainingItemCount)
	}
	return n, nil
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
