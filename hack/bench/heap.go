package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/hack/internal/etcdgw"
	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/token"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// The managers the memory section measures, as cmd/main.go builds them.
const (
	// authOnlyMode is an auth-server replica (--enable-controller=false).
	authOnlyMode = "auth-only"
	// combinedMode is the controller and the auth server in one process,
	// cmd/main.go's default.
	combinedMode = "combined"
)

// heapResult is one manager's live heap, measured in this process, with the
// cluster holding first half the records, then all of them. Its fields are
// exported for the report's template.
type heapResult struct {
	// Mode is the manager measured: authOnlyMode or combinedMode.
	Mode                 string
	Target, Workers      int
	WithKeys, WithStatus bool
	// Existing records were left by the other sections (real issuance).
	Existing int
	// Created records (with their ApiKeys and Secrets) were written by this
	// section straight into etcd, by Workers parallel transactions.
	Created    int
	CreateTime time.Duration
	// BudgetHit is set when the creation budget ran out before Target.
	BudgetHit bool
	Samples   []heapSample
	// IndexOnly is the heap per key of the token index alone, filled in
	// memory with IndexOnlyKeys keys: what the informer caches do not hold.
	IndexOnly     float64
	IndexOnlyKeys int
	Err           error

	// Combined is the same measurement of a combined manager over the same
	// objects (nil on a combined result, or when the section ran without
	// ApiKeys, which a controller would collect the records of).
	Combined *heapResult
	// Revoke is revocation measured on the last combined manager, with
	// every record indexed and forward-auth under load (nil when it did
	// not run).
	Revoke *scaleRevokeResult
}

// perKey is the verdict's number: the marginal cost between the two sizes
// (per key, beyond the baseline), or with one sample its cost including
// the baseline, which can only be higher.
func (h *heapResult) perKey() (float64, bool) {
	switch n := len(h.Samples); n {
	case 0:
		return 0, false
	case 1:
		return h.Samples[0].PerKey(), true
	default:
		return marginal(h.Samples[n-2], h.Samples[n-1]), true
	}
}

// heapSample is one measurement: the heap before a manager was built, once
// its index held every record, and after it stopped. Its fields are
// exported for the report's template.
type heapSample struct {
	Records, ApiKeys             int
	Before, Synced, AfterStopped uint64
	SyncTime                     time.Duration
	// Backlog is what the controllers' work queues still held when the
	// heap was read (combined mode; -1 if not known). It is waited for to
	// drain, for up to settleTimeout, since it is memory of the start-up,
	// not of the keys.
	Backlog int
	// SettleTime is how long the wait for the backlog took.
	SettleTime time.Duration
	// Peak is the largest live heap from the manager's start to the heap's
	// reading, as each GC marked it: the start-up's listings and backlog
	// included, which is what a memory limit must hold.
	Peak uint64
}

// PerKey is the heap the manager added per record, baseline included.
func (s heapSample) PerKey() float64 {
	return (float64(s.Synced) - float64(s.Before)) / float64(s.Records)
}

// marginal is the heap per record between two samples: the slope, with the
// manager's fixed baseline cancelled out.
func marginal(a, b heapSample) float64 {
	da := float64(a.Synced) - float64(a.Before)
	db := float64(b.Synced) - float64(b.Before)
	return (db - da) / float64(b.Records-a.Records)
}

// runHeap measures both modes at half the target and at the target and,
// once the last combined manager holds every key, revocation on it under
// forward-auth load at half of that manager's own closed-loop throughput
// (httpRPS, the http section's, is reported beside it).
func runHeap(ctx context.Context, c config, e *env, httpRPS float64) *heapResult {
	res := &heapResult{Mode: authOnlyMode, Target: c.heapKeys, Workers: c.createWorkers,
		WithKeys: c.heapWithKeys, WithStatus: c.heapWithKeys && c.heapKeyStatus}
	if res.WithKeys {
		res.Combined = &heapResult{Mode: combinedMode}
	}
	res.Err = measureHeapSizes(ctx, c, e, res, httpRPS)
	if res.Err != nil {
		harness.Progress("  failed: %v", res.Err)
	}
	if cr := res.Combined; cr != nil {
		cr.Target, cr.Workers, cr.WithKeys, cr.WithStatus = res.Target, res.Workers, res.WithKeys, res.WithStatus
		cr.Existing, cr.Created, cr.CreateTime, cr.BudgetHit = res.Existing, res.Created, res.CreateTime, res.BudgetHit
		if cr.Err == nil && res.Err != nil && len(cr.Samples) == 0 {
			cr.Err = res.Err
		}
	}
	return res
}

// measureHeapSizes fills the cluster to half the target within half the
// creation budget and measures each mode, then to the target within the
// rest and measures again. If the budget runs out, it measures what it has.
func measureHeapSizes(ctx context.Context, c config, e *env, res *heapResult, httpRPS float64) error {
	const ns = "bench-heap"
	if err := e.createNamespace(ctx, ns); err != nil {
		return err
	}
	existing, err := e.countRecords(ctx)
	if err != nil {
		return err
	}
	res.Existing = existing
	loader, err := e.newEtcdLoader(ctx, c, res.Combined != nil)
	if err != nil {
		return err
	}
	sizes := []int{c.heapKeys / 2, c.heapKeys}
	for phase, size := range sizes {
		// The budget counts writing only, not measuring.
		deadline := time.Now().Add(c.heapCreateLimit*time.Duration(phase+1)/2 - res.CreateTime)
		if need := size - existing - res.Created; need > 0 {
			begin := time.Now()
			n, err := loader.writeKeys(ctx, c, ns, res.Created, need, deadline)
			res.Created += n
			res.CreateTime += time.Since(begin)
			if err == nil {
				err = e.awaitRecords(ctx, existing+res.Created)
			}
			if err != nil {
				return err
			}
			res.BudgetHit = res.BudgetHit || n < need
			harness.Progress("  %d records in the cluster (%d written to etcd in %s)",
				existing+res.Created, res.Created, res.CreateTime.Round(time.Millisecond))
		}
		s, err := e.measureHeap(ctx, authOnlyMode, c.memProfile, nil)
		if err != nil {
			return err
		}
		res.Samples = append(res.Samples, s)
		progressSample(authOnlyMode, s)
		if cr := res.Combined; cr != nil && cr.Err == nil {
			var then func(url string, auth *authserver.Server)
			if phase == len(sizes)-1 && loader.keep > 0 {
				// Revocation at scale, on the manager that holds them all.
				then = func(url string, auth *authserver.Server) {
					res.Revoke = runScaleRevoke(ctx, c, e, url, auth, loader.kept(ns), httpRPS)
				}
			}
			e.measureCombined(ctx, cr, combinedProfile(c.memProfile), then)
		}
	}
	res.IndexOnlyKeys = c.heapKeys
	res.IndexOnly, err = indexOnlyPerKey(c.heapKeys)
	return err
}

// measureCombined adds a sample of a combined manager to cr, or sets its
// error.
func (e *env) measureCombined(ctx context.Context, cr *heapResult, profile string,
	then func(url string, auth *authserver.Server)) {
	s, err := e.measureHeap(ctx, combinedMode, profile, then)
	if err != nil {
		cr.Err = err
		harness.Progress("  %s manager failed: %v", combinedMode, err)
		return
	}
	// A stopped controller leaves behind, in this process, the metric
	// series of the keys it saw (the expiry gauge forgets a key only once
	// it is deleted), and the next one reuses them. So every combined
	// sample counts from the heap before the first combined manager: what
	// the manager holds per key, metrics included.
	if len(cr.Samples) > 0 {
		s.Before = cr.Samples[0].Before
	}
	cr.Samples = append(cr.Samples, s)
	progressSample(combinedMode, s)
}

// combinedProfile is where the combined manager's heap profile goes, beside
// the auth-only one.
func combinedProfile(authOnly string) string {
	if authOnly == "" {
		return ""
	}
	return authOnly + "." + combinedMode
}

func progressSample(mode string, s heapSample) {
	settled := ""
	if s.Backlog >= 0 {
		settled = fmt.Sprintf(", controllers settled in %s (%d items left queued)", s.SettleTime.Round(time.Millisecond), s.Backlog)
	}
	harness.Progress("  %s, %d records: %.0f B/key (heap %s → %s), synced in %s%s",
		mode, s.Records, s.PerKey(), mib(s.Before), mib(s.Synced), s.SyncTime.Round(time.Millisecond), settled)
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
	before := harness.LiveHeap()
	index := authserver.NewIndex()
	for i := range records {
		index.SetKey(keys[i])
		index.SetRecord(records[i])
	}
	after := harness.LiveHeap()
	if index.Len() != n {
		return 0, fmt.Errorf("in-memory index holds %d tokens, want %d", index.Len(), n)
	}
	runtime.KeepAlive(keys)
	runtime.KeepAlive(records)
	return (float64(after) - float64(before)) / float64(n), nil
}

// etcdLoader writes objects into the control plane's etcd as the API server
// stores them (JSON), through etcd's JSON gateway. The API server's watch
// cache takes them from etcd's watch like its own writes, so informers list
// them as usual; skipping the API server is what lets the section reach
// 100k keys within its budget (one transaction per batch of keys, rather
// than three API requests per key).
type etcdLoader struct {
	etcd *etcdgw.Gateway
	// owner is spec.owner as the defaults policy stamps it on create.
	owner *apikeysv1alpha1.Owner
	// keep is how many keys, from number 0, have their tokens kept in
	// tokens, for the revocation trials. They stay in memory only.
	keep   int
	mu     sync.Mutex
	tokens map[int]string
}

// etcdBatch is how many keys go in one transaction: three objects each,
// within etcd's default limit of 128 operations per transaction.
const etcdBatch = 40

// newEtcdLoader is a loader for this control plane. If revocation at scale
// will run, the first keys it writes are the trials' and their load's:
// their tokens stay in this process's memory.
func (e *env) newEtcdLoader(ctx context.Context, c config, revocation bool) (*etcdLoader, error) {
	owner, err := e.stampedOwner(ctx)
	if err != nil {
		return nil, err
	}
	l := &etcdLoader{
		etcd:   etcdgw.New(e.testEnv.ControlPlane.Etcd.URL.String(), time.Minute),
		owner:  owner,
		tokens: map[int]string{},
	}
	if revocation && c.revokeScaleTrials > 0 {
		l.keep = c.httpConns + 2*c.revokeScaleTrials
	}
	return l, nil
}

// keptKey is a key written by the loader whose token this process kept.
type keptKey struct {
	namespace, name string
	token           string
}

// kept returns the kept keys that were written, in number order.
func (l *etcdLoader) kept(ns string) []keptKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	var keys []keptKey
	for i := range l.keep {
		if tok, ok := l.tokens[i]; ok {
			keys = append(keys, keptKey{namespace: ns, name: heapKeyName(i), token: tok})
		}
	}
	return keys
}

// stampedOwner is the spec.owner the defaults policy gives the ApiKeys
// this process creates: its user, with the groups a key may carry. Keys
// written straight into etcd get it too, as keys created through
// admission have it (and the mutating webhook's matchConditions then leave
// their updates alone).
func (e *env) stampedOwner(ctx context.Context) (*apikeysv1alpha1.Owner, error) {
	review := &authenticationv1.SelfSubjectReview{}
	if err := e.client.Create(ctx, review); err != nil {
		return nil, fmt.Errorf("asking the API server who this client is: %w", err)
	}
	user := review.Status.UserInfo
	return &apikeysv1alpha1.Owner{Username: user.Username, UID: user.UID, Groups: benchPolicy().AllowedGroups(user.Groups)}, nil
}

// writeKeys writes n keys numbered from first, rounded up to whole batches,
// with createWorkers parallel transactions, starting no new batch after
// deadline. It returns how many it wrote; running out of time is not an
// error.
func (l *etcdLoader) writeKeys(ctx context.Context, c config, ns string, first, n int, deadline time.Time) (int, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	now := time.Now()
	// A batch in flight uses ctx: a deadline must not cut a key from its
	// record half way (a transaction is all or nothing anyway).
	batches, err := parallel(dctx, c.createWorkers, (n+etcdBatch-1)/etcdBatch, func(b int) error {
		var puts []etcdgw.KeyValue
		for i := first + b*etcdBatch; i < first+(b+1)*etcdBatch; i++ {
			objs, tok, err := heapObjects(ns, i, now, l.owner, c.heapWithKeys, c.heapKeyStatus)
			if err != nil {
				return err
			}
			if i < l.keep {
				l.mu.Lock()
				l.tokens[i] = tok
				l.mu.Unlock()
			}
			for _, obj := range objs {
				put, err := storedAs(obj)
				if err != nil {
					return err
				}
				puts = append(puts, put)
			}
		}
		return l.putRetrying(ctx, puts)
	})
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = nil
	}
	return batches * etcdBatch, err
}

// storedAs is obj's etcd key (under the API server's default /registry
// prefix) and value. Custom resources are stored as JSON; a Secret is
// normally protobuf, but the API server reads JSON just as well.
func storedAs(obj client.Object) (etcdgw.KeyValue, error) {
	var key string
	switch o := obj.(type) {
	case *apikeysv1alpha1.ApiKey:
		key = "/registry/apikeys.dev/apikeys/" + o.Namespace + "/" + o.Name
	case *apikeysv1alpha1.ApiKeyRecord:
		key = "/registry/apikeys.dev/apikeyrecords/" + o.Name
	case *corev1.Secret:
		key = "/registry/secrets/" + o.Namespace + "/" + o.Name
	default:
		return etcdgw.KeyValue{}, fmt.Errorf("no storage key for %T", obj)
	}
	value, err := json.Marshal(obj)
	return etcdgw.KeyValue{Key: []byte(key), Value: value}, err
}

// putRetrying writes puts in one transaction, tried again when etcd answers
// that the request timed out (a busy 2-core machine).
func (l *etcdLoader) putRetrying(ctx context.Context, puts []etcdgw.KeyValue) error {
	var err error
	for range 3 {
		if err = l.etcd.PutAll(ctx, puts); !errors.Is(err, etcdgw.ErrUnavailable) {
			return err
		}
	}
	return err
}

// heapKeyName is the name of the loader's key number i.
func heapKeyName(i int) string { return fmt.Sprintf("heap-%06d", i) }

// heapObjects is key number i as issuance leaves it, each object as
// admission, the controller or the API server's defaulting writes it, so
// that a controller started over them finds nothing to do: the ApiKey with
// what the defaults policy stamps (finalizer, owner, Secret name) and,
// withStatus, its status; its record; its Secret. Without ApiKeys, a
// record alone, for a key that does not exist. It also returns the token,
// which callers keep in memory only.
func heapObjects(ns string, i int, now time.Time, owner *apikeysv1alpha1.Owner, withKeys, withStatus bool) (
	[]client.Object, string, error) {
	key := benchKey(ns, heapKeyName(i))
	key.TypeMeta = metav1.TypeMeta{APIVersion: apikeysv1alpha1.GroupVersion.String(), Kind: "ApiKey"}
	key.UID = uuid.NewUUID()
	key.Generation = 1
	key.CreationTimestamp = metav1.NewTime(now.Truncate(time.Second))
	key.Finalizers = []string{controller.Finalizer}
	key.Spec.Identity = apikeysv1alpha1.IdentityKey
	key.Spec.Prefix = apikeysv1alpha1.DefaultPrefix
	key.Spec.Owner = owner
	secretName := apikeysv1alpha1.DefaultSecretName(key.Name)
	key.Spec.Secret.Name = secretName

	tok, err := token.Generate(apikeysv1alpha1.DefaultPrefix)
	if err != nil {
		return nil, "", err
	}
	rec := recordFor(tok, key, now)
	rec.TypeMeta = metav1.TypeMeta{APIVersion: apikeysv1alpha1.GroupVersion.String(), Kind: "ApiKeyRecord"}
	rec.UID = uuid.NewUUID()
	rec.Generation = 1
	rec.CreationTimestamp = key.CreationTimestamp
	if !withKeys {
		return []client.Object{rec}, tok, nil
	}
	secretUID := uuid.NewUUID()
	rec.Spec.SecretUID = string(secretUID) // the Secret below, as the controller pins it
	if withStatus {
		key.Status = issuedStatus(key, rec)
	}
	secret := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: secretName, Namespace: ns, UID: secretUID, CreationTimestamp: key.CreationTimestamp,
			Labels: map[string]string{apikeysv1alpha1.ManagedByLabel: apikeysv1alpha1.ManagedByValue},
			Annotations: map[string]string{
				apikeysv1alpha1.TokenHashAnnotation: rec.Spec.TokenHash,
				apikeysv1alpha1.TokenHintAnnotation: rec.Spec.TokenHint,
				apikeysv1alpha1.IssuedAtAnnotation:  rec.Spec.IssuedAt.UTC().Format(time.RFC3339),
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: key.APIVersion, Kind: key.Kind, Name: key.Name, UID: key.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Type: apikeysv1alpha1.SecretType,
		Data: map[string][]byte{apikeysv1alpha1.SecretTokenKey: []byte(tok)},
	}
	return []client.Object{key, rec, secret}, tok, nil
}

// awaitRecords waits until the API server counts at least want records:
// objects written to etcd reach its watch cache a moment later.
func (e *env) awaitRecords(ctx context.Context, want int) error {
	return harness.PollUntil(ctx, 100*time.Millisecond, time.Minute, func() (bool, error) {
		n, err := e.countRecords(ctx)
		return n >= want, err
	})
}

// measureHeap starts a manager of the given mode against the cluster as it
// is, waits until its index holds every record, and reads the live heap
// before and after (each after a full GC). If then is not nil and all went
// well, it is called with the manager's auth server (and its URL) once the
// heap was read, before the manager stops.
func (e *env) measureHeap(ctx context.Context, mode, profile string,
	then func(url string, auth *authserver.Server)) (heapSample, error) {
	var s heapSample
	var err error
	if s.Records, err = e.countRecords(ctx); err != nil {
		return s, err
	}
	if s.ApiKeys, err = e.countAPIKeys(ctx); err != nil {
		return s, err
	}
	// The auth server's metrics follow the latest Server's index; point
	// them at an empty one so an earlier server's index is not counted in
	// the baseline and then freed during the measurement.
	authserver.NewServer(authserver.NewIndex(), authserver.Options{})
	s.Before = harness.LiveHeap()

	queues, err := readQueues()
	if err != nil {
		return s, err
	}
	start := time.Now()
	peakProfile := ""
	if profile != "" {
		peakProfile = profile + ".peak"
	}
	peak := harness.PeakLiveHeap(peakProfile)
	m, auth, err := e.startHeapManager(ctx, mode, e.reconcilers)
	if err != nil {
		peak()
		return s, err
	}
	err = harness.PollUntil(ctx, 10*time.Millisecond, syncTimeout, func() (bool, error) {
		return auth.Index().Synced() && auth.Index().Len() >= s.Records, nil
	})
	s.SyncTime = time.Since(start)
	s.Backlog = -1
	if mode == combinedMode && err == nil {
		s.Backlog, err = queues.settle(ctx, s.ApiKeys)
		s.SettleTime = time.Since(start) - s.SyncTime
	}
	s.Peak = peak()
	s.Synced = harness.LiveHeap()
	if profile != "" {
		if perr := harness.WriteHeapProfile(profile); perr != nil {
			harness.Progress("  could not write the heap profile: %v", perr)
		}
	}
	if err == nil {
		err = e.checkIndexed(ctx, &s, mode, auth.Index().Len())
	}
	if then != nil && err == nil {
		then(m.url, auth)
	}
	runtime.KeepAlive(auth)
	if stopErr := m.Stop(); err == nil {
		err = stopErr
	}
	authserver.NewServer(authserver.NewIndex(), authserver.Options{})
	s.AfterStopped = harness.LiveHeap()
	return s, err
}

// checkIndexed compares the index's size, got, with the records counted
// before the manager started. The API server's count has been seen to run
// behind for a moment after a bulk write straight into etcd (an earlier
// count had already reached it); so a count that differs is taken again
// until it agrees, for a few seconds, before it is an error.
func (e *env) checkIndexed(ctx context.Context, s *heapSample, mode string, got int) error {
	switch {
	case got == s.Records:
		return nil
	case got > s.Records && mode == combinedMode:
		// The controller issued tokens for keys another section left
		// without one: they are in the heap, so they count.
		s.Records = got
		return nil
	}
	counted := s.Records
	err := harness.PollUntil(ctx, 100*time.Millisecond, 10*time.Second, func() (bool, error) {
		var err error
		counted, err = e.countRecords(ctx)
		return counted == got, err
	})
	if err != nil {
		return fmt.Errorf("index holds %d tokens, the cluster %d records (%d when the manager started)", got, counted, s.Records)
	}
	harness.Progress("  the API server counted %d records when the manager started, %d now, as the index holds", s.Records, counted)
	s.Records = counted
	return nil
}

// settleTimeout bounds the wait for a combined manager's controllers to
// work through the keys and records they find at start.
const settleTimeout = 5 * time.Minute

// queueCounts are the controllers' work queues as controller-runtime's
// metrics count them: items waiting, and items ever added. The metrics
// outlive the managers of earlier sections (same controller names), so a
// manager's own are the difference from a reading taken before it started.
type queueCounts struct{ depth, adds float64 }

// controllerLabel is the label of controller-runtime's work queue metrics
// that names the controller.
const controllerLabel = "name"

// benchControllers are the controllers a combined manager runs.
var benchControllers = map[string]bool{"apikey": true, "apikeyrecord-collector": true}

func readQueues() (queueCounts, error) {
	var q queueCounts
	families, err := metrics.Registry.Gather()
	if err != nil {
		return q, err
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			mine := false
			for _, l := range m.GetLabel() {
				mine = mine || (l.GetName() == controllerLabel && benchControllers[l.GetValue()])
			}
			switch {
			case !mine:
			case f.GetName() == "workqueue_depth":
				q.depth += m.GetGauge().GetValue()
			case f.GetName() == "workqueue_adds_total":
				q.adds += m.GetCounter().GetValue()
			}
		}
	}
	return q, nil
}

// settle waits until the controllers have been handed at least want items
// since the reading q (the ApiKey controller is handed every key once at
// start; the record collector, only records whose key is gone) and their
// queues are back to empty, for at most settleTimeout. It returns what the
// queues still hold.
func (q queueCounts) settle(ctx context.Context, want int) (int, error) {
	var now queueCounts
	err := harness.PollUntil(ctx, 100*time.Millisecond, settleTimeout, func() (bool, error) {
		var err error
		now, err = readQueues()
		return now.adds-q.adds >= float64(want) && now.depth <= q.depth, err
	})
	backlog := int(now.depth - q.depth)
	if err != nil && ctx.Err() == nil && backlog >= 0 {
		harness.Progress("  the controllers still had %d items queued after %s", backlog, settleTimeout)
		err = nil
	}
	return max(backlog, 0), err
}

// syncTimeout bounds the wait for a manager's index to hold every record:
// listing 100k keys and records takes minutes on a busy 2-core machine.
const syncTimeout = 10 * time.Minute

// startHeapManager runs a manager as cmd/main.go builds it for mode: an
// auth-only replica (its cache options, the auth server), or the
// controller and the auth server together (the controller's cache
// options). It returns once started; the caller waits for the index.
func (e *env) startHeapManager(ctx context.Context, mode string, reconcilers int) (*runningManager, *authserver.Server, error) {
	port, err := utils.FreePort()
	if err != nil {
		return nil, nil, err
	}
	opts := managerOptions()
	if mode != combinedMode {
		opts.Cache.ByObject = authserver.CacheOptions()
	} else {
		// The controllers' names are taken by the managers of the sections
		// before, in this same process.
		opts.Controller.SkipNameValidation = ptr.To(true)
		// Listing 100k keys, records and Secrets can take longer than the
		// default 2 minutes a controller waits for its caches.
		opts.Controller.CacheSyncTimeout = syncTimeout
	}
	opts.WebhookServer = webhook.NewServer(webhook.Options{
		Host: loopback, Port: port, CertDir: e.certDir,
		TLSOpts: []func(*tls.Config){func(t *tls.Config) { t.NextProtos = []string{alpnHTTP1} }},
	})
	mgr, err := ctrl.NewManager(e.cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	if mode == combinedMode {
		if err := harness.SetupController(mgr, benchPolicy(), reconcilers); err != nil {
			return nil, nil, err
		}
	}
	auth := authserver.NewServer(authserver.NewIndex(), authserver.Options{})
	if err := auth.SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}
	m := startManager(ctx, mgr)
	m.url = fmt.Sprintf("https://%s:%d", loopback, port)
	return m, auth, nil
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
