package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/hack/internal/etcdgw"
	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
)

const (
	// namespace holds every key, as one team's namespace would.
	namespace = "team-orders"
	// creator is the user who creates the sample keys (kubectl create):
	// admission stamps them as spec.owner.
	creator = "alice@example.com"
	// keyNameFormat names key i; copies keep the length, so every name
	// takes the same bytes.
	keyNameFormat = "orders-api-%06d"
)

// The etcd key prefixes kube-apiserver stores each kind under (its default
// --etcd-prefix, /registry).
var (
	apikeysPrefix = "/registry/apikeys.dev/apikeys/" + namespace + "/"
	recordsPrefix = "/registry/apikeys.dev/apikeyrecords/"
	secretsPrefix = "/registry/secrets/" + namespace + "/"
	eventsPrefix  = "/registry/events/" + namespace + "/"
)

// sizeStats summarises stored objects of one kind.
type sizeStats struct {
	count                int
	keyBytes, valueBytes float64 // means
	minValue, maxValue   int
}

func statsOf(kvs []etcdgw.KeyValue) sizeStats {
	s := sizeStats{count: len(kvs)}
	if len(kvs) == 0 {
		return s
	}
	var keys, values int
	s.minValue = len(kvs[0].Value)
	for _, kv := range kvs {
		keys += len(kv.Key)
		values += len(kv.Value)
		s.minValue = min(s.minValue, len(kv.Value))
		s.maxValue = max(s.maxValue, len(kv.Value))
	}
	s.keyBytes = float64(keys) / float64(len(kvs))
	s.valueBytes = float64(values) / float64(len(kvs))
	return s
}

// sampleResult is what the keys issued by the real controller store.
type sampleResult struct {
	keys      int
	issueTime time.Duration
	// apikeys, records (as issued, and after the auth server's last-used
	// flush), secrets and events: bytes stored in etcd.
	apikeys, records, usedRecords, secrets, events sizeStats
	// dbBefore and dbAfter are etcd's database size, compacted and
	// defragmented, before the sample and after it (events included).
	dbBefore, dbAfter int64
	// stored is every stored object of the sample after the flush; the
	// copies are made from these.
	stored map[string][]etcdgw.KeyValue
}

// runSample issues c.sample keys through admission and the controller,
// flushes a last-use into each record as the auth server would, and reads
// back what etcd holds.
func runSample(ctx context.Context, c config, e *env) (*sampleResult, error) {
	res := &sampleResult{keys: c.sample}
	if err := e.createNamespace(ctx); err != nil {
		return nil, err
	}
	var err error
	if res.dbBefore, err = e.etcd.CompactDefrag(ctx); err != nil {
		return nil, err
	}
	op, err := e.startOperator(ctx, c)
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	err = createSampleKeys(ctx, e, c.sample)
	if err == nil {
		err = awaitReady(ctx, e, c.sample, c.issueTimeout)
	}
	res.issueTime = time.Since(begin)
	if err := errors.Join(err, op.Stop()); err != nil {
		return nil, err
	}
	issued, err := e.etcd.RangePrefix(ctx, recordsPrefix)
	if err != nil {
		return nil, err
	}
	res.records = statsOf(issued)
	if err := flushLastUse(ctx, e); err != nil {
		return nil, err
	}
	if res.dbAfter, err = e.etcd.CompactDefrag(ctx); err != nil {
		return nil, err
	}
	res.stored = map[string][]etcdgw.KeyValue{}
	for _, prefix := range []string{apikeysPrefix, recordsPrefix, secretsPrefix, eventsPrefix} {
		if res.stored[prefix], err = e.etcd.RangePrefix(ctx, prefix); err != nil {
			return nil, err
		}
	}
	res.apikeys = statsOf(res.stored[apikeysPrefix])
	res.usedRecords = statsOf(res.stored[recordsPrefix])
	res.secrets = statsOf(res.stored[secretsPrefix])
	res.events = statsOf(res.stored[eventsPrefix])
	return res, nil
}

// createNamespace creates the team's namespace, where the creator may
// manage ApiKeys.
func (e *env) createNamespace(ctx context.Context) error {
	editor := metav1.ObjectMeta{Namespace: namespace, Name: "apikey-editor"}
	return errors.Join(
		e.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}),
		e.client.Create(ctx, &rbacv1.Role{ObjectMeta: editor, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{apikeysv1alpha1.GroupVersion.Group}, Resources: []string{"apikeys"},
			Verbs: []string{"create", "get", "list", "watch"},
		}}}),
		e.client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: editor,
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: editor.Name},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: creator}},
		}),
	)
}

// sampleKey is an ApiKey as a team writes it: a description and two
// scopes, identity Key (the default), no expiry of its own.
func sampleKey(i int) *apikeysv1alpha1.ApiKey {
	name := fmt.Sprintf(keyNameFormat, i)
	return &apikeysv1alpha1.ApiKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: apikeysv1alpha1.ApiKeySpec{
			Description: "Orders API client " + name,
			Scopes:      []string{"orders:read", "invoices:*"},
		},
	}
}

// createSampleKeys creates n keys as the creator would with kubectl create,
// from 8 parallel clients.
func createSampleKeys(ctx context.Context, e *env, n int) error {
	cfg := rest.CopyConfig(e.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: creator, Groups: []string{namespace}}
	alice, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	const workers = 8
	next := make(chan int)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range next {
				if err := alice.Create(ctx, sampleKey(i), client.FieldOwner("kubectl-create")); err != nil {
					errs[w] = err
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// awaitReady polls until n keys report Ready=True.
func awaitReady(ctx context.Context, e *env, n int, timeout time.Duration) error {
	ready := 0
	err := harness.PollUntil(ctx, 500*time.Millisecond, timeout, func() (bool, error) {
		var keys apikeysv1alpha1.ApiKeyList
		if err := e.client.List(ctx, &keys, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		ready = 0
		for i := range keys.Items {
			if meta.IsStatusConditionTrue(keys.Items[i].Status.Conditions, apikeysv1alpha1.ConditionReady) {
				ready++
			}
		}
		return ready >= n, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d keys Ready: %w", ready, n, err)
	}
	return nil
}

// flushLastUse writes status.lastUsedAt into every record with the patch
// the auth server's usage flusher sends, as field manager "manager": the
// form a record takes once its key has been used.
func flushLastUse(ctx context.Context, e *env) error {
	cfg := rest.CopyConfig(e.cfg)
	cfg.UserAgent = managerUserAgent
	auth, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	var records apikeysv1alpha1.ApiKeyRecordList
	if err := auth.List(ctx, &records); err != nil {
		return err
	}
	at := metav1.NewTime(time.Now().Truncate(time.Second))
	for i := range records.Items {
		rec := &records.Items[i]
		patch := client.MergeFromWithOptions(rec.DeepCopy(), client.MergeFromWithOptimisticLock{})
		rec.Status.LastUsedAt = &at
		if err := auth.Status().Patch(ctx, rec, patch); err != nil {
			return err
		}
	}
	return nil
}
