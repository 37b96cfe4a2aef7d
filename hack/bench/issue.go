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
// ConfigMaps created just before by the same clients. Its fields are
// exported for the report's template, but for writes and reads, which the
// control plane's section fills in.
type issueResult struct {
	Keys, Workers, Reconcilers int
	QPS                        float64
	Burst                      int
	Timeout                    time.Duration
	// ConfigMaps is how long the same clients took to create Keys plain
	// ConfigMaps, from the first Create until the last returned.
	ConfigMaps time.Duration
	// Created is when the last Create returned, Ready when the last key
	// became Ready, Indexed when the auth server held every new token; all
	// from the first Create. Zero if not reached.
	Created, Ready, Indexed time.Duration
	// ReadyAtTarget is how many were Ready when the target's 60 s had
	// passed (all of them if that was sooner).
	ReadyAtTarget int
	// GaveUp is set when the timeout passed first; ReadyCount were Ready
	// after Waited.
	GaveUp     bool
	ReadyCount int
	Waited     time.Duration
	// writes and reads are what kube-apiserver counted during the section,
	// the ConfigMaps included.
	writes, reads apiRequests
	// ConfigMapCPU and KeyCPU are the CPU time each ConfigMap create and
	// each issued key cost (from the first create until the last was
	// created, or Ready); zero if not measured.
	ConfigMapCPU, KeyCPU cpuTimes
	Err                  error
}

// RawRate is the API server's create rate for plain ConfigMaps, per second.
func (is *issueResult) RawRate() float64 {
	if is.ConfigMaps > 0 {
		return float64(is.Keys) / is.ConfigMaps.Seconds()
	}
	return 0
}

// Ratio is keys issued per second as a fraction of RawRate; 0 if either
// was not measured.
func (is *issueResult) Ratio() float64 {
	if raw := is.RawRate(); raw > 0 {
		return is.Rate() / raw
	}
	return 0
}

// Rate is keys issued per second over the run.
func (is *issueResult) Rate() float64 {
	if is.Ready > 0 {
		return float64(is.Keys) / is.Ready.Seconds()
	}
	if is.Waited > 0 {
		return float64(is.ReadyCount) / is.Waited.Seconds()
	}
	return 0
}

func runIssue(ctx context.Context, c config, e *env, auth *authserver.Server) *issueResult {
	res := &issueResult{Keys: c.issueKeys, Workers: c.createWorkers, Reconcilers: c.reconcilers,
		QPS: c.kubeAPIQPS, Burst: c.kubeAPIBurst, Timeout: c.issueTimeout}
	cpu0, cpuErr := e.cpuNow(ctx)
	res.ConfigMaps, res.Err = measureConfigMaps(ctx, c, e)
	if cpu1, err := e.cpuNow(ctx); cpuErr == nil && err == nil && res.Err == nil {
		res.ConfigMapCPU = cpu1.sub(cpu0).per(c.issueKeys)
	}
	if res.Err == nil {
		harness.Progress("  created %d ConfigMaps in %s (%.0f/s)", c.issueKeys, res.ConfigMaps.Round(time.Millisecond), res.RawRate())
		res.Err = measureIssue(ctx, c, e, auth, res)
	}
	if res.KeyCPU.apiServer > 0 && res.ConfigMapCPU.apiServer > 0 {
		harness.Progress("  CPU per ConfigMap: kube-apiserver %s, etcd %s, this process %s; per key: %s, %s, %s",
			us(res.ConfigMapCPU.apiServer), us(res.ConfigMapCPU.etcd), us(res.ConfigMapCPU.bench),
			us(res.KeyCPU.apiServer), us(res.KeyCPU.etcd), us(res.KeyCPU.bench))
	}
	if res.Err != nil {
		harness.Progress("  failed: %v", res.Err)
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
	if c.apiServerProfile != "" {
		wait := e.profileAPIServer(ctx, c.apiServerProfile)
		defer wait()
	}
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
	res.Created = time.Since(start)
	harness.Progress("  created %d ApiKeys in %s", created, res.Created.Round(time.Millisecond))
	if createErr != nil {
		return createErr
	}

	ready := <-readyDone
	res.ReadyCount = int(readyNow.Load())
	if atTarget.Stop() {
		res.ReadyAtTarget = res.ReadyCount
	} else {
		<-atTargetTaken
		res.ReadyAtTarget = int(atTargetCount.Load())
	}
	switch {
	case errors.Is(ready.err, context.DeadlineExceeded):
		res.GaveUp, res.Waited = true, time.Since(start)
		harness.Progress("  stopped waiting after %s: %d of %d Ready (%d at 60 s)",
			res.Waited.Round(time.Second), res.ReadyCount, c.issueKeys, res.ReadyAtTarget)
		return nil
	case ready.err != nil:
		return ready.err
	}
	res.Ready = ready.at.Sub(start)
	if cpu1, err := e.cpuNow(ctx); cpuErr == nil && err == nil {
		res.KeyCPU = cpu1.sub(cpu0).per(c.issueKeys)
	}
	harness.Progress("  all %d Ready after %s", c.issueKeys, res.Ready.Round(time.Millisecond))
	if at := <-indexedDone; auth.Index().Len() >= baseline+c.issueKeys {
		res.Indexed = at.Sub(start)
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
