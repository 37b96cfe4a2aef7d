package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
	"github.com/apikey-operator/apikey-operator/internal/token"
)

// rotateResult is the on-demand rotation trials: from the annotation to the
// new token's first 200, and from the old token's grace end to its first
// 401. Its fields are exported for the report's template.
type rotateResult struct {
	Grace time.Duration // spec.rotation.gracePeriod of every trial key

	// Delivered runs from the annotation patch to the Secret watch event
	// that carries the new token; Usable on to /auth's first 200 for it.
	Delivered, Usable latencies
	// AfterDelivery is Usable − Delivered: how long the consumer waited for
	// the auth server once it had the new token.
	AfterDelivery latencies
	// GraceMin and GraceMax bound validUntil − the annotation patch: the
	// grace period as it played out. validUntil counts from the rotation's
	// issuance time, which is whole seconds, so it can be up to 1 s shorter
	// than grace.
	GraceMin, GraceMax time.Duration
	// Refused runs from the old token's validUntil to the arrival of its
	// first 401: an upper bound on how late the refusal came. LastAccepted
	// runs from validUntil to the send time of its last 200: a lower bound
	// (negative when that request left before the grace ended).
	Refused, LastAccepted latencies
	// OldPolls is how many times /auth was asked about old tokens.
	OldPolls int

	Err error
}

// rotateSample is one trial's measurements.
type rotateSample struct {
	delivered, usable, grace time.Duration
	end                      graceEnd
}

// runRotate rotates one fresh key per trial, one trial at a time.
func runRotate(ctx context.Context, c config, e *env, p *prober) *rotateResult {
	res := &rotateResult{Grace: c.rotateGrace}
	const ns = "bench-rotate"
	if res.Err = e.createNamespace(ctx, ns); res.Err != nil {
		return res
	}
	var delivered, usable, afterDelivery, refused, lastAccepted []time.Duration
	for i := range c.rotateTrials {
		s, err := rotateTrial(ctx, c, e, p, ns, i)
		if err != nil {
			res.Err = fmt.Errorf("trial %d: %w", i, err)
			harness.Progress("  failed: %v", res.Err)
			break
		}
		delivered, usable = append(delivered, s.delivered), append(usable, s.usable)
		afterDelivery = append(afterDelivery, s.usable-s.delivered)
		refused, lastAccepted = append(refused, s.end.refused), append(lastAccepted, s.end.lastAccepted)
		if i == 0 || s.grace < res.GraceMin {
			res.GraceMin = s.grace
		}
		res.GraceMax = max(res.GraceMax, s.grace)
		res.OldPolls += s.end.polls
	}
	res.Delivered, res.Usable, res.AfterDelivery = summarize(delivered), summarize(usable), summarize(afterDelivery)
	res.Refused, res.LastAccepted = summarize(refused), summarize(lastAccepted)
	harness.Progress("  new token usable p50 %s, p99 %s; old token refused after grace end: p99 %s, max %s (%d trials)",
		res.Usable.P50, res.Usable.P99, res.Refused.P99, res.Refused.Max, res.Usable.N)
	return res
}

// rotateTrial issues a key with a grace period, rotates it through the
// annotation as a user would, follows the new token as a consumer would,
// then watches the old one through the end of its grace period.
func rotateTrial(ctx context.Context, c config, e *env, p *prober, ns string, i int) (rotateSample, error) {
	var s rotateSample
	key := benchKey(ns, fmt.Sprintf("rotate-%03d", i))
	key.Spec.Rotation = &apikeysv1alpha1.Rotation{GracePeriod: &metav1.Duration{Duration: c.rotateGrace}}
	key, _, _, err := e.createReady(ctx, key)
	if err != nil {
		return s, err
	}
	oldTok, err := e.readToken(ctx, key)
	if err != nil {
		return s, err
	}
	if _, err := p.awaitStatus(ctx, oldTok, http.StatusOK); err != nil {
		return s, fmt.Errorf("the auth server never accepted the first token: %w", err)
	}

	// Rotate at a different point of the second in each trial: validUntil
	// is rounded up to a whole second, so the grace that plays out depends
	// on that point.
	if err := untilPhase(ctx, time.Duration(i)*time.Second/time.Duration(c.rotateTrials)); err != nil {
		return s, err
	}
	request := fmt.Sprintf("bench-%03d", i)
	newTok, sent, deliveredAt, err := e.rotateAndFollow(ctx, key, oldTok, request)
	if err != nil {
		return s, err
	}
	accepted, err := p.awaitStatus(ctx, newTok, http.StatusOK)
	if err != nil {
		return s, fmt.Errorf("the auth server never accepted the rotated token: %w", err)
	}
	s.delivered, s.usable = deliveredAt.Sub(sent), accepted.Sub(sent)

	validUntil, err := e.awaitPreviousKey(ctx, key, token.Hint(oldTok), request)
	if err != nil {
		return s, err
	}
	s.grace = validUntil.Sub(sent)
	s.end, err = p.awaitGraceEnd(ctx, oldTok, validUntil)
	return s, err
}

// untilPhase waits until the wall clock is phase past a whole second. It
// paces the trials; it does not wait for any state.
func untilPhase(ctx context.Context, phase time.Duration) error {
	wait := (phase - time.Duration(time.Now().Nanosecond())) % time.Second
	if wait < 0 {
		wait += time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// rotateAndFollow sets key's rotate annotation to request and watches its
// Secret, as a consumer (a reloader, an SDK) would, until the Secret holds a
// token other than old. It returns that token, when the patch was sent and
// when the Secret event carrying the new token arrived.
func (e *env) rotateAndFollow(ctx context.Context, key *apikeysv1alpha1.ApiKey, old, request string) (
	tok string, sent, delivered time.Time, err error) {
	wctx, cancel := context.WithTimeout(ctx, trialTimeout)
	defer cancel()
	ref := client.ObjectKey{Namespace: key.Namespace, Name: key.Status.SecretName}
	w, err := e.client.Watch(wctx, &corev1.SecretList{},
		client.InNamespace(ref.Namespace), client.MatchingFields{"metadata.name": ref.Name})
	if err != nil {
		return "", sent, delivered, err
	}
	defer w.Stop()

	patch := client.MergeFrom(key.DeepCopy())
	metav1.SetMetaDataAnnotation(&key.ObjectMeta, apikeysv1alpha1.RotateAnnotation, request)
	sent = time.Now()
	if err := e.client.Patch(ctx, key, patch); err != nil {
		return "", sent, delivered, err
	}
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return "", sent, delivered, fmt.Errorf("watch on Secret %s ended before it held a new token", ref)
			}
			secret, isSecret := ev.Object.(*corev1.Secret)
			if !isSecret || ev.Type == watch.Deleted {
				continue
			}
			tok = string(secret.Data[apikeysv1alpha1.SecretTokenKey])
			if tok == "" || tok == old {
				continue
			}
			delivered = time.Now()
			return tok, sent, delivered, checkDelivery(secret, tok)
		case <-wctx.Done():
			return "", sent, delivered, fmt.Errorf("secret %s held no new token within %s of the annotation", ref, trialTimeout)
		}
	}
}

// checkDelivery checks that secret's annotations describe tok, the token it
// holds, as reloaders rely on. The error never carries the token.
func checkDelivery(secret *corev1.Secret, tok string) error {
	a := secret.Annotations
	if a[apikeysv1alpha1.TokenHashAnnotation] != token.FormatHash(token.Sum(tok)) {
		return fmt.Errorf("secret %s/%s: %s does not name the hash of the token it holds",
			secret.Namespace, secret.Name, apikeysv1alpha1.TokenHashAnnotation)
	}
	if a[apikeysv1alpha1.TokenHintAnnotation] != token.Hint(tok) {
		return fmt.Errorf("secret %s/%s: %s is not the hint of the token it holds",
			secret.Namespace, secret.Name, apikeysv1alpha1.TokenHintAnnotation)
	}
	return nil
}

// awaitPreviousKey polls key until its status says request was acted on and
// lists the token with hint among previousKeys, and returns that token's
// validUntil.
func (e *env) awaitPreviousKey(ctx context.Context, key *apikeysv1alpha1.ApiKey, hint, request string) (time.Time, error) {
	var validUntil time.Time
	ref := client.ObjectKeyFromObject(key)
	err := harness.PollUntil(ctx, probeInterval, trialTimeout, func() (bool, error) {
		got := &apikeysv1alpha1.ApiKey{}
		if err := e.client.Get(ctx, ref, got); err != nil {
			return false, err
		}
		if got.Status.LastRotateRequest != request {
			return false, nil
		}
		i := slices.IndexFunc(got.Status.PreviousKeys, func(k apikeysv1alpha1.PreviousKey) bool { return k.TokenHint == hint })
		if i < 0 {
			return false, nil
		}
		validUntil = got.Status.PreviousKeys[i].ValidUntil.Time
		return true, nil
	})
	if err != nil {
		return validUntil, fmt.Errorf("ApiKey %s: status never listed the previous token with its validUntil: %w", ref, err)
	}
	return validUntil, nil
}

// graceEnd is what the probes of an old token saw around its validUntil.
type graceEnd struct {
	// refused is the first 401's arrival − validUntil; lastAccepted is the
	// last 200's send time − validUntil.
	refused, lastAccepted time.Duration
	polls                 int
}

// awaitGraceEnd asks /auth about tok every probeInterval, from now (before
// validUntil) until the first 401. Every answer before then must be 200: a
// refusal that arrives before validUntil fails the trial, as does a grace
// period that ended before the first probe (nothing could be measured).
func (p *prober) awaitGraceEnd(ctx context.Context, tok string, validUntil time.Time) (graceEnd, error) {
	var g graceEnd
	if left := time.Until(validUntil); left <= 0 {
		return g, fmt.Errorf("the grace period ended %s before the old token could be probed; raise -rotate-grace", -left)
	}
	ctx, cancel := context.WithDeadline(ctx, validUntil.Add(trialTimeout))
	defer cancel()
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	var lastAccepted time.Time
	for {
		sent := time.Now()
		code, err := p.status(ctx, tok)
		got := time.Now()
		g.polls++
		switch {
		case err != nil:
			return g, err
		case code == http.StatusOK:
			lastAccepted = sent
		case code != http.StatusUnauthorized:
			return g, fmt.Errorf("/auth answered %d for the old token", code)
		case got.Before(validUntil):
			return g, fmt.Errorf("the old token was refused %s before its grace period ended", validUntil.Sub(got))
		case lastAccepted.IsZero():
			return g, errors.New("the old token was refused at the first probe, after its grace period ended")
		default:
			g.refused, g.lastAccepted = got.Sub(validUntil), lastAccepted.Sub(validUntil)
			return g, nil
		}
		select {
		case <-ctx.Done():
			return g, fmt.Errorf("the old token was still accepted %s after its grace period ended", trialTimeout)
		case <-tick.C:
		}
	}
}
