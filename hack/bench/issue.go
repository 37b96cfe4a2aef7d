package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
)

// issueResult is the bulk issuance run: many ApiKeys created at once with
// the controller and an auth server running, compared with as many plain
// ConfigMaps created just before by the same clients.
type issueResult struct {
	keys, workers, reconcilers int
	qps                        float64
	burst                      int
	timeout                    time.Duration
	// configMaps is how long the same clients took to create keys plain
	// ConfigMaps, from the first Create until the last returned.
	configMaps time.Duration
	// created is when the last Create returned, ready when the last key
	// became Ready, indexed when the auth server held every new token; all
	// from the first Create. Zero if not reached.
	created, ready, indexed time.Duration
	// readyAtTarget is how many were Ready when the target's 60 s had
	// passed (all of them if that was sooner).
	readyAtTarget int
	// gaveUp is set when the timeout passed first; readyCount were Ready
	// after waited.
	gaveUp     bool
	readyCount int
	waited     time.Duration
	// writes is what kube-apiserver counted during the section, the
	// ConfigMaps included.
	writes apiWrites
	// configMapCPU and keyCPU are the CPU time each ConfigMap create and
	// each issued key cost (from the first create until the last was
	// created, or Ready); zero if not measured.
	configMapCPU, keyCPU cpuTimes
	err                  error
}

// rawRate is the API server's create rate for plain ConfigMaps, per second.
func (is *issueResult) rawRate() float64 {
	if is.configMaps > 0 {
		return float64(is.keys) / is.configMaps.Seconds()
	}
	return 0
}

// ratio is keys issued per second as a fraction of rawRate; 0 if either
// was not measured.
func (is *issueResult) ratio() float64 {
	if raw := is.rawRate(); raw > 0 {
		return is.rate() / raw
	}
	return 0
}

// rate is keys issued per second over the run.
func (is *issueResult) rate() float64 {
	if is.ready > 0 {
		return float64(is.keys) / is.ready.Seconds()
	}
	if is.waited > 0 {
		return float64(is.readyCount) / is.waited.Seconds()
	}
	return 0
}

func runIssue(ctx context.Context, c config, e *env, auth *authserver.Server) *issueResult {
	res := &issueResult{keys: c.issueKeys, workers: c.createWorkers, reconcilers: c.reconcilers,
		qps: c.kubeAPIQPS, burst: c.kubeAPIBurst, timeout: c.issueTimeout}
	cpu0, cpuErr := e.cpuNow(ctx)
	res.configMaps, res.err = measureConfigMaps(ctx, c, e)
	if cpu1, err := e.cpuNow(ctx); cpuErr == nil && err == nil && res.err == nil {
		res.configMapCPU = cpu1.sub(cpu0).per(c.issueKeys)
	}
	if res.err == nil {
		harness.Progress("  created %d ConfigMaps in %s (%.0f/s)", c.issueKeys, res.configMaps.Round(time.Millisecond), res.rawRate())
		res.err = measureIssue(ctx, c, e, auth, res)
	}
	if res.keyCPU.apiServer > 0 && res.configMapCPU.apiServer > 0 {
		harness.Progress("  CPU per ConfigMap: kube-apiserver %s, etcd %s, this process %s; per key: %s, %s, %s",
			us(res.configMapCPU.apiServer), us(res.configMapCPU.etcd), us(res.configMapCPU.bench),
			us(res.keyCPU.apiServer), us(res.keyCPU.etcd), us(res.keyCPU.bench))
	}
	if res.err != nil {
		harness.Progress("  failed: %v", res.err)
	}
	return res
}

// measureConfigMaps creates as many plain ConfigMaps as the bulk run creates
// ApiKeys, with the same client and workers, and returns how long it took:
// the API server's raw create rate that issuance is compared with.
func measureConfigMaps(ctx context.Context, c config, e *env) (time.Duration, error) {
	const ns = "bench-issue-configmaps"
	if err := e.createNamespace(ctx, ns); err != nil {
		return 0, err
	}
	data := map[string]string{"description": "Benchmark ConfigMap, created as fast as an ApiKey would be"}
	start := time.Now()
	_, err := parallel(ctx, c.createWorkers, c.issueKeys, func(i int) error {
		return e.client.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("bulk-%05d", i)},
			Data:       data,
		})
	})
	return time.Since(start), err
}

func measureIssue(ctx context.Context, c config, e *env, auth *authserver.Server, res *issueResult) error {
	const ns = "bench-issue"
	if err := e.createNamespace(ctx, ns); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.issueTimeout)
	defer cancel()

	w, err := e.client.Watch(ctx, &apikeysv1alpha1.ApiKeyList{}, client.InNamespace(ns))
	if err != nil {
		return err
	}
	baseline := auth.Index().Len()
	cpu0, cpuErr := e.cpuNow(ctx)
	start := time.Now()

	var readyNow atomic.Int64
	type readyOutcome struct {
		at  time.Time
		err error
	}
	readyDone := make(chan readyOutcome, 1)
	go func() {
		at, err := e.countReady(ctx, ns, w, c.issueKeys, &readyNow)
		readyDone <- readyOutcome{at, err}
	}()
	var atTargetCount atomic.Int64
	atTargetTaken := make(chan struct{})
	atTarget := time.AfterFunc(maxIssueTime, func() {
		atTargetCount.Store(readyNow.Load())
		close(atTargetTaken)
	})
	indexedDone := make(chan time.Time, 1)
	go func() {
		var at time.Time
		_ = harness.PollUntil(ctx, 10*time.Millisecond, c.issueTimeout, func() (bool, error) {
			at = time.Now()
			return auth.Index().Len() >= baseline+c.issueKeys, nil
		})
		indexedDone <- at
	}()

	created, createErr := parallel(ctx, c.createWorkers, c.issueKeys, func(i int) error {
		return e.client.Create(ctx, benchKey(ns, fmt.Sprintf("bulk-%05d", i)))
	})
	res.created = time.Since(start)
	harness.Progress("  created %d ApiKeys in %s", created, res.created.Round(time.Millisecond))
	if createErr != nil {
		return createErr
	}

	ready := <-readyDone
	res.readyCount = int(readyNow.Load())
	if atTarget.Stop() {
		res.readyAtTarget = res.readyCount
	} else {
		<-atTargetTaken
		res.readyAtTarget = int(atTargetCount.Load())
	}
	switch {
	case errors.Is(ready.err, context.DeadlineExceeded):
		res.gaveUp, res.waited = true, time.Since(start)
		harness.Progress("  stopped waiting after %s: %d of %d Ready (%d at 60 s)",
			res.waited.Round(time.Second), res.readyCount, c.issueKeys, res.readyAtTarget)
		return nil
	case ready.err != nil:
		return ready.err
	}
	res.ready = ready.at.Sub(start)
	if cpu1, err := e.cpuNow(ctx); cpuErr == nil && err == nil {
		res.keyCPU = cpu1.sub(cpu0).per(c.issueKeys)
	}
	harness.Progress("  all %d Ready after %s", c.issueKeys, res.ready.Round(time.Millisecond))
	if at := <-indexedDone; auth.Index().Len() >= baseline+c.issueKeys {
		res.indexed = at.Sub(start)
	}
	return nil
}

// countReady consumes w, ApiKey events in namespace ns, until want distinct
// keys have been Ready, and returns when that happened; readyNow follows
// the count. If the watch ends early it lists the namespace and watches
// again from there.
func (e *env) countReady(ctx context.Context, ns string, w watch.Interface, want int, readyNow *atomic.Int64) (time.Time, error) {
	ready := make(map[string]bool, want)
	defer func() { w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if ok && ev.Type != watch.Error {
				if key, isKey := ev.Object.(*apikeysv1alpha1.ApiKey); isKey && ev.Type != watch.Deleted && isReady(key) {
					ready[key.Name] = true
				}
			} else {
				w.Stop()
				var err error
				if w, err = e.relistReady(ctx, ns, ready); err != nil {
					return time.Time{}, err
				}
			}
			readyNow.Store(int64(len(ready)))
			if len(ready) >= want {
				return time.Now(), nil
			}
		}
	}
}

// relistReady adds the Ready keys of ns to ready and watches from the list.
func (e *env) relistReady(ctx context.Context, ns string, ready map[string]bool) (watch.Interface, error) {
	list := &apikeysv1alpha1.ApiKeyList{}
	if err := e.client.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if isReady(&list.Items[i]) {
			ready[list.Items[i].Name] = true
		}
	}
	return e.client.Watch(ctx, &apikeysv1alpha1.ApiKeyList{}, client.InNamespace(ns),
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
}

// parallel calls do(0) … do(n-1) on workers goroutines and returns how many
// succeeded. It stops handing out work at the first error or when ctx ends.
func parallel(ctx context.Context, workers, n int, do func(i int) error) (int, error) {
	var next, done atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if len(errs) == 0 && ctx.Err() != nil && int(done.Load()) < n {
		errs = append(errs, ctx.Err())
	}
	return int(done.Load()), errors.Join(errs...)
}
