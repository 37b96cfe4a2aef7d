package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
)

// scaleRevokeResult is revocation under its target's conditions: on the memory
// section's last combined manager, its index holding every key in the
// cluster, with forward-auth under half load on the same auth server. Its
// fields, like revokeResult's, are exported for the report's template.
type scaleRevokeResult struct {
	revokeResult
	// Keys is the auth server's index size when the trials began.
	Keys int
	// HereRPS is this manager's own closed-loop throughput, the median of
	// hereRounds rounds just before the trials: the offered load is half
	// of it.
	HereRPS float64
	// HTTPRPS is the in-memory auth server's closed-loop throughput from
	// the http section (0 if it did not run), for comparison only: that
	// server holds fewer keys and shares its cores with no controller.
	HTTPRPS float64
	// Offered is the load's arrival rate; Achieved what was answered.
	Offered, Achieved float64
	Conns             int
	// Load is the latency of the load's own requests during the trials.
	Load latencies
	// LoadFor is how long the load ran, from before the first trial to
	// after the last.
	LoadFor time.Duration
	LoadErr error
	// Gone is how long, after the last trial, the deleted ApiKeys took to
	// disappear: the controller finalized them, through admission.
	Gone time.Duration
}

// underLoad reports whether every trial ran with the load flowing.
func (s *scaleRevokeResult) underLoad() bool {
	return s.LoadErr == nil && s.Offered > 0 && s.LoadFor > 0
}

// runScaleRevoke runs revocation trials against auth, at url, on keys the
// loader wrote and kept the tokens of: the first conns keys carry the
// load, each of the rest is revoked once, alternately deleted and
// suspended. httpRPS is the http section's auth server throughput, which
// the report compares this manager's with.
func runScaleRevoke(ctx context.Context, c config, e *env, url string, auth *authserver.Server,
	keys []keptKey, httpRPS float64) *scaleRevokeResult {
	res := &scaleRevokeResult{Keys: auth.Index().Len(), HTTPRPS: httpRPS, Conns: c.httpConns}
	harness.Progress("  revocation → 401 on this manager (%d keys indexed): %d delete + %d suspend trials under forward-auth load",
		res.Keys, c.revokeScaleTrials, c.revokeScaleTrials)
	res.Err = measureScaleRevoke(ctx, c, e, url, auth.Index(), keys, res)
	if res.Err != nil {
		harness.Progress("  failed: %v", res.Err)
		return res
	}
	harness.Progress("  p50 %s, p99 %s, max %s over %d trials (the index refused p50 %s, p99 %s); "+
		"load %.0f req/s offered (half this manager's max of %.0f), %.0f answered, p99 %s",
		res.All.P50, res.All.P99, res.All.Max, res.All.N, res.Indexed.P50, res.Indexed.P99,
		res.Offered, res.HereRPS, res.Achieved, res.Load.P99)
	return res
}

func measureScaleRevoke(ctx context.Context, c config, e *env, url string, ix *authserver.Index, keys []keptKey,
	res *scaleRevokeResult) error {
	if len(keys) < c.httpConns+2 {
		return fmt.Errorf("only %d of the kept keys were written", len(keys))
	}
	p := e.newProber(url)
	if err := harness.PollUntil(ctx, 10*time.Millisecond, time.Minute, func() (bool, error) {
		_, err := p.status(ctx, "")
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("the auth server does not answer: %w", err)
	}

	load, trials := keys[:c.httpConns], keys[c.httpConns:]
	tokens := make([]string, len(load))
	for i, k := range load {
		tokens[i] = k.token
	}
	t := newTarget("auth server", strings.TrimPrefix(url, "https://"), tokens, c.httpConns)
	lg := &loadGenerator{
		tls:         &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{alpnHTTP1}, RootCAs: e.caPool},
		maxRequests: c.httpMaxRequests,
	}
	// The warm-up also checks that every load key is accepted.
	if _, err := lg.closedLoop(t, c.httpWarmup); err != nil {
		return fmt.Errorf("warming up: %w", err)
	}
	// Half load is half of what this server can answer here and now, the
	// median of a few closed-loop rounds as §2 takes it. The http
	// section's max is a different server's (fewer keys, no controller
	// beside it): half of that saturated this one.
	rounds := make([]float64, hereRounds)
	for i := range rounds {
		rps, err := lg.closedLoop(t, c.httpClosed)
		if err != nil {
			return fmt.Errorf("measuring the auth server's throughput: %w", err)
		}
		rounds[i] = rps
	}
	res.HereRPS = median(rounds)
	res.Offered = res.HereRPS / 2

	bg := lg.startBackgroundLoad(t, res.Offered)
	if err := bg.awaitStarted(); err != nil {
		return fmt.Errorf("starting the load: %w", err)
	}
	trialErr := runScaleTrials(ctx, e, p, ix, trials, bg, res)
	bg.finish()
	res.Load, res.Achieved, res.LoadFor, res.LoadErr = bg.lat, bg.achieved, bg.ran, bg.err
	if trialErr != nil {
		return trialErr
	}
	return e.awaitDeleted(ctx, trials, res)
}

// hereRounds is how many closed-loop rounds measure the manager's max.
const hereRounds = 5

// runScaleTrials revokes each key in turn, alternately by delete and by
// suspension, and times the first 401. Each trial starts once the
// controller has finished with the one before (the key gone, or its status
// saying Suspended), so that every revocation runs beside the load alone,
// not beside the previous trials' writes. It stops if the load stops.
func runScaleTrials(ctx context.Context, e *env, p *prober, ix *authserver.Index, keys []keptKey, bg *backgroundLoad,
	res *scaleRevokeResult) error {
	res.revokeResult = alternateRevocations(len(keys), func(i int, suspend bool) (revocation, error) {
		k := keys[i]
		key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: k.namespace, Name: k.name}}
		rev, err := e.timeRevocation(ctx, p, key, k.token, suspend, ix)
		if err == nil {
			err = e.awaitSettled(ctx, key, suspend)
		}
		if err == nil && !bg.running() {
			err = fmt.Errorf("the forward-auth load stopped: %v", bg.err)
		}
		return rev, err
	})
	return res.Err
}

// awaitSettled waits until the controller has finished with a revoked key:
// a deleted one is gone (records deleted, finalizer removed), a suspended
// one reports Suspended for its current generation.
func (e *env) awaitSettled(ctx context.Context, key *apikeysv1alpha1.ApiKey, suspended bool) error {
	return harness.PollUntil(ctx, 5*time.Millisecond, trialTimeout, func() (bool, error) {
		got := &apikeysv1alpha1.ApiKey{}
		err := e.client.Get(ctx, client.ObjectKeyFromObject(key), got)
		switch {
		case apierrors.IsNotFound(err):
			return !suspended, nil
		case err != nil:
			return false, err
		}
		return suspended && got.Status.ObservedGeneration == got.Generation &&
			meta.IsStatusConditionTrue(got.Status.Conditions, apikeysv1alpha1.ConditionSuspended), nil
	})
}

// awaitDeleted waits until the deleted keys (every other one, from the
// first) are gone: the controller deleted their records and removed its
// finalizer, an update admission let through.
func (e *env) awaitDeleted(ctx context.Context, keys []keptKey, res *scaleRevokeResult) error {
	start := time.Now()
	left := 0
	err := harness.PollUntil(ctx, 50*time.Millisecond, trialTimeout, func() (bool, error) {
		left = 0
		for i := 0; i < len(keys) && i < 2*res.Deleted.N; i += 2 {
			err := e.client.Get(ctx, client.ObjectKey{Namespace: keys[i].namespace, Name: keys[i].name},
				&metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{
					APIVersion: apikeysv1alpha1.GroupVersion.String(), Kind: "ApiKey"}})
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return false, err
			default:
				left++
			}
		}
		return left == 0, nil
	})
	res.Gone = time.Since(start)
	if err != nil {
		return errors.Join(fmt.Errorf("%d deleted ApiKeys still there (finalizer not removed)", left), err)
	}
	return nil
}
