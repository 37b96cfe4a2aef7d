package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
)

// probeInterval is how often a trial asks /auth or the API server whether
// the state it waits for has arrived.
const probeInterval = 2 * time.Millisecond

// trialTimeout bounds each wait of a trial.
const trialTimeout = 30 * time.Second

// revokeResult is the time from a revoking API call's return to the first
// 401 from /auth, for deletes and for suspensions. The fields of the
// results are exported for the report's template.
type revokeResult struct {
	Deleted, Suspended, All latencies
	// Indexed is the time from the same return to the auth server's index
	// refusing the token (as noticed by polling, and no later than the
	// 401), where the index was in this process to ask (N is 0 otherwise).
	// Negative if it refused before the call returned.
	Indexed latencies
	Err     error
}

// revocation is one trial's times, counted from the revoking call's return.
type revocation struct {
	refused time.Duration // to the first 401 from /auth
	indexed time.Duration // to the index's own refusal, if watched
	watched bool
}

// indexPollInterval is how often a trial asks an index in this process
// whether it still accepts the revoked token.
const indexPollInterval = 250 * time.Microsecond

// applyResult is the time from the Create call to Ready=True with the Secret
// present, and on to the auth server's first 200 for the new token.
type applyResult struct {
	Ready, Usable latencies
	Err           error
}

// runRevoke alternates delete and suspend trials, one key each.
func runRevoke(ctx context.Context, c config, e *env, p *prober) *revokeResult {
	res := &revokeResult{}
	const ns = "bench-revoke"
	if res.Err = e.createNamespace(ctx, ns); res.Err != nil {
		return res
	}
	*res = alternateRevocations(2*c.revokeTrials, func(i int, suspend bool) (revocation, error) {
		key, _, _, err := e.createReady(ctx, benchKey(ns, fmt.Sprintf("revoke-%03d", i)))
		if err != nil {
			return revocation{}, err
		}
		tok, err := e.readToken(ctx, key)
		if err != nil {
			return revocation{}, err
		}
		return e.timeRevocation(ctx, p, key, tok, suspend, nil)
	})
	if res.Err != nil {
		harness.Progress("  failed: %v", res.Err)
	}
	harness.Progress("  p50 %s, p99 %s, max %s over %d trials", res.All.P50, res.All.P99, res.All.Max, res.All.N)
	return res
}

// alternateRevocations runs n revocation trials, deleting the key in even
// ones and suspending it in odd ones, until one fails, and summarises the
// latencies of those that passed.
func alternateRevocations(n int, trial func(i int, suspend bool) (revocation, error)) revokeResult {
	var res revokeResult
	var deleted, suspended, indexed []time.Duration
	for i := range n {
		suspend := i%2 == 1
		rev, err := trial(i, suspend)
		if err != nil {
			res.Err = fmt.Errorf("trial %d: %w", i, err)
			break
		}
		if suspend {
			suspended = append(suspended, rev.refused)
		} else {
			deleted = append(deleted, rev.refused)
		}
		if rev.watched {
			indexed = append(indexed, rev.indexed)
		}
	}
	all := append(append([]time.Duration{}, deleted...), suspended...)
	res.Deleted, res.Suspended, res.All = summarize(deleted), summarize(suspended), summarize(all)
	res.Indexed = summarize(indexed)
	return res
}

// suspendPatch sets spec.suspended and nothing else: spec.owner stays, so
// the admission webhooks' matchConditions leave the update alone.
var suspendPatch = client.RawPatch(types.MergePatchType, []byte(`{"spec":{"suspended":true}}`))

// timeRevocation checks /auth accepts tok, the token of key, then deletes
// or suspends key and returns how long /auth went on accepting tok after
// the call returned. Given the auth server's index (in this process), it
// also times the index's own refusal: the watch event's arrival, apart from
// the wait of the probe's request on a loaded server.
func (e *env) timeRevocation(ctx context.Context, p *prober, key *apikeysv1alpha1.ApiKey, tok string, suspend bool,
	ix *authserver.Index) (revocation, error) {
	if _, err := p.awaitStatus(ctx, tok, http.StatusOK); err != nil {
		return revocation{}, fmt.Errorf("the auth server does not accept ApiKey %s/%s: %w", key.Namespace, key.Name, err)
	}
	var indexed <-chan time.Time
	if ix != nil {
		watchCtx, stop := context.WithCancel(ctx)
		defer stop()
		indexed = watchRefusal(watchCtx, ix, tok)
	}
	var err error
	if suspend {
		err = e.client.Patch(ctx, key, suspendPatch)
	} else {
		err = e.client.Delete(ctx, key)
	}
	if err != nil {
		return revocation{}, err
	}
	returned := time.Now()
	refused, err := p.awaitStatus(ctx, tok, http.StatusUnauthorized)
	if err != nil {
		return revocation{}, fmt.Errorf("the auth server still accepts revoked ApiKey %s/%s: %w", key.Namespace, key.Name, err)
	}
	rev := revocation{refused: refused.Sub(returned)}
	if indexed != nil {
		select {
		case at := <-indexed:
			// The poller runs on the same starved cores as everything else
			// and may notice late; /auth answering 401 proves the index had
			// refused by then.
			rev.indexed, rev.watched = min(at.Sub(returned), rev.refused), true
		case <-time.After(time.Second):
			return revocation{}, fmt.Errorf("/auth refused ApiKey %s/%s's token, but its index went on accepting it", key.Namespace, key.Name)
		}
	}
	return rev, nil
}

// watchRefusal asks ix every indexPollInterval whether it accepts tok, and
// sends the time it first does not. Verify takes the index's read lock for
// a map lookup, so the polling does not hold up the index's writers.
func watchRefusal(ctx context.Context, ix *authserver.Index, tok string) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		tick := time.NewTicker(indexPollInterval)
		defer tick.Stop()
		for {
			if _, code := ix.Verify(tok, time.Now()); code != authserver.CodeValid {
				out <- time.Now()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// runApply creates keys one at a time and times each to Ready, then to the
// auth server's first 200.
func runApply(ctx context.Context, c config, e *env, p *prober) *applyResult {
	res := &applyResult{}
	const ns = "bench-apply"
	if res.Err = e.createNamespace(ctx, ns); res.Err != nil {
		return res
	}
	var ready, usable []time.Duration
	for i := range c.applyTrials {
		key, start, readyAt, err := e.createReady(ctx, benchKey(ns, fmt.Sprintf("apply-%03d", i)))
		if err != nil {
			res.Err = fmt.Errorf("trial %d: %w", i, err)
			break
		}
		tok, err := e.readToken(ctx, key)
		if err != nil {
			res.Err = fmt.Errorf("trial %d: %w", i, err)
			break
		}
		accepted, err := p.awaitStatus(ctx, tok, http.StatusOK)
		if err != nil {
			res.Err = fmt.Errorf("trial %d: the auth server never accepted the new key: %w", i, err)
			break
		}
		ready = append(ready, readyAt.Sub(start))
		usable = append(usable, accepted.Sub(start))
	}
	if res.Err != nil {
		harness.Progress("  failed: %v", res.Err)
	}
	res.Ready, res.Usable = summarize(ready), summarize(usable)
	harness.Progress("  Ready p50 %s, p99 %s over %d trials", res.Ready.P50, res.Ready.P99, res.Ready.N)
	return res
}

// createReady creates key and watches it until Ready=True with its Secret
// present. It returns the key as last seen, when Create was called and when
// both held.
func (e *env) createReady(ctx context.Context, key *apikeysv1alpha1.ApiKey) (
	got *apikeysv1alpha1.ApiKey, start, readyAt time.Time, err error) {
	wctx, cancel := context.WithTimeout(ctx, trialTimeout)
	defer cancel()
	w, err := e.client.Watch(wctx, &apikeysv1alpha1.ApiKeyList{},
		client.InNamespace(key.Namespace), client.MatchingFields{"metadata.name": key.Name})
	if err != nil {
		return nil, start, readyAt, err
	}
	defer w.Stop()

	start = time.Now()
	if err := e.client.Create(ctx, key); err != nil {
		return nil, start, readyAt, err
	}
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, start, readyAt, fmt.Errorf("watch on ApiKey %s/%s ended before it was Ready", key.Namespace, key.Name)
			}
			seen, isKey := ev.Object.(*apikeysv1alpha1.ApiKey)
			if !isKey || !isReady(seen) {
				continue
			}
			readyAt = time.Now()
			if present, err := e.awaitSecret(ctx, seen); err != nil {
				return nil, start, readyAt, err
			} else if present.After(readyAt) {
				readyAt = present
			}
			return seen, start, readyAt, nil
		case <-wctx.Done():
			return nil, start, readyAt, fmt.Errorf("ApiKey %s/%s not Ready within %s", key.Namespace, key.Name, trialTimeout)
		}
	}
}

// isReady reports whether key is Ready=True and names its Secret.
func isReady(key *apikeysv1alpha1.ApiKey) bool {
	return meta.IsStatusConditionTrue(key.Status.Conditions, apikeysv1alpha1.ConditionReady) && key.Status.SecretName != ""
}

// awaitSecret returns when key's Secret was first seen on the API server;
// it is normally there already, since it is written before Ready.
func (e *env) awaitSecret(ctx context.Context, key *apikeysv1alpha1.ApiKey) (time.Time, error) {
	var seen time.Time
	ref := client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}
	err := harness.PollUntil(ctx, probeInterval, trialTimeout, func() (bool, error) {
		err := e.client.Get(ctx, ref, &corev1.Secret{})
		seen = time.Now()
		return err == nil, client.IgnoreNotFound(err)
	})
	return seen, err
}

// readToken reads key's token from its Secret. Callers keep it in memory
// only: it is never printed or written.
func (e *env) readToken(ctx context.Context, key *apikeysv1alpha1.ApiKey) (string, error) {
	secret := &corev1.Secret{}
	ref := client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}
	if err := e.client.Get(ctx, ref, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("secret %s of ApiKey %s/%s is gone", ref.Name, key.Namespace, key.Name)
		}
		return "", err
	}
	tok := string(secret.Data[apikeysv1alpha1.SecretTokenKey])
	if tok == "" {
		return "", errors.New("the Secret holds no token")
	}
	return tok, nil
}
