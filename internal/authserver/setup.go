package authserver

import (
	"context"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// The auth server reads keys and records and writes only records' status,
// which issuance never reads (last-used times).
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeyrecords,verbs=get;list;watch
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeyrecords/status,verbs=get;patch

// SetupWithManager feeds s's index from the manager's informers, serves the
// endpoints on the manager's webhook server (every replica, no leader
// needed), adds a readiness check that fails until the index has synced,
// and starts the last-used flusher.
func (s *Server) SetupWithManager(mgr ctrl.Manager) error {
	s.Register(registrar{mgr.GetWebhookServer()})
	if err := mgr.AddReadyzCheck("auth-index", func(*http.Request) error {
		if !s.index.Synced() {
			return fmt.Errorf("the token index has not synced yet")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := mgr.Add(&indexFeeder{index: s.index, mgr: mgr}); err != nil {
		return err
	}
	return mgr.Add(&usageFlusher{index: s.index, client: mgr.GetClient(), every: s.opts.UsageFlushInterval})
}

// registrar adapts the webhook server's Register to Handle.
type registrar struct {
	srv interface{ Register(string, http.Handler) }
}

func (r registrar) Handle(path string, h http.Handler) { r.srv.Register(path, h) }

// indexFeeder keeps the index in step with ApiKeyRecords and ApiKeys.
type indexFeeder struct {
	index *Index
	mgr   ctrl.Manager
}

var _ manager.LeaderElectionRunnable = (*indexFeeder)(nil)

// NeedLeaderElection is false: every replica keeps its own index.
func (f *indexFeeder) NeedLeaderElection() bool { return false }

// Start registers the event handlers, marks the index synced once both
// informers have delivered their initial lists, and runs until ctx ends.
func (f *indexFeeder) Start(ctx context.Context) error {
	records, err := f.mgr.GetCache().GetInformer(ctx, &apikeysv1alpha1.ApiKeyRecord{})
	if err != nil {
		return err
	}
	keys, err := f.mgr.GetCache().GetInformer(ctx, &apikeysv1alpha1.ApiKey{})
	if err != nil {
		return err
	}
	recordsReg, err := records.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { f.setRecord(obj) },
		UpdateFunc: func(old, obj any) {
			if !statusOnlyUpdate(old, obj) {
				f.setRecord(obj)
			}
		},
		DeleteFunc: func(obj any) {
			if rec, ok := unwrapDeleted(obj).(*apikeysv1alpha1.ApiKeyRecord); ok {
				f.index.DeleteRecord(rec.Name)
			}
		},
	})
	if err != nil {
		return err
	}
	keysReg, err := keys.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { f.setKey(obj) },
		UpdateFunc: func(_, obj any) { f.setKey(obj) },
		DeleteFunc: func(obj any) {
			if key, ok := unwrapDeleted(obj).(*apikeysv1alpha1.ApiKey); ok {
				f.index.DeleteKey(key.UID)
			}
		},
	})
	if err != nil {
		return err
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), recordsReg.HasSynced, keysReg.HasSynced) {
		return ctx.Err()
	}
	f.index.MarkSynced()
	ctrl.Log.WithName("authserver").Info("Token index synced", "tokens", f.index.Len())
	<-ctx.Done()
	return nil
}

func (f *indexFeeder) setRecord(obj any) {
	if rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord); ok {
		f.index.SetRecord(rec)
	}
}

// statusOnlyUpdate reports whether a record update left its spec as it was
// (same object, same generation): the usage flusher's own status patches
// then cost no new entry.
func statusOnlyUpdate(old, obj any) bool {
	before, ok := old.(*apikeysv1alpha1.ApiKeyRecord)
	after, ok2 := obj.(*apikeysv1alpha1.ApiKeyRecord)
	return ok && ok2 && before.UID == after.UID && before.Generation != 0 && before.Generation == after.Generation
}

func (f *indexFeeder) setKey(obj any) {
	if key, ok := obj.(*apikeysv1alpha1.ApiKey); ok {
		f.index.SetKey(key)
	}
}

func unwrapDeleted(obj any) any {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

// usageFlusher writes last-used times to the status of each used token's
// ApiKeyRecord, off the request path: each tick, at most one patch per
// record whose token was used since the last flush, and only if it moves
// status.lastUsedAt forward. The controller shows the newest on the ApiKey.
// Records' status is the one thing the auth server writes, and issuance
// never reads it. Replicas flush their own usage; the optimistic lock and
// the forward-only rule merge them.
type usageFlusher struct {
	index  *Index
	client client.Client
	every  time.Duration
}

// NeedLeaderElection is false: every replica flushes what it saw.
func (u *usageFlusher) NeedLeaderElection() bool { return false }

// Start flushes every interval until ctx ends, then once more.
func (u *usageFlusher) Start(ctx context.Context) error {
	t := time.NewTicker(u.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			u.flush(flushCtx)
			cancel()
			return nil
		case <-t.C:
			u.flush(ctx)
		}
	}
}

func (u *usageFlusher) flush(ctx context.Context) {
	log := ctrl.Log.WithName("authserver").WithName("usage")
	for _, use := range u.index.unflushedUses() {
		last := use.state.lastUsed.Load()
		if err := u.flushOne(ctx, use.name, last); err != nil {
			log.V(1).Info("Could not record last use; will retry", "record", use.name, "error", err.Error())
			continue
		}
		use.state.flushed.Store(last)
	}
}

// flushOne moves the named record's status.lastUsedAt forward to last. A
// record that is gone needs no flush; one written since it was read (by
// another replica, say) is a conflict, retried next tick.
func (u *usageFlusher) flushOne(ctx context.Context, name string, last int64) error {
	rec := &apikeysv1alpha1.ApiKeyRecord{}
	if err := u.client.Get(ctx, client.ObjectKey{Name: name}, rec); err != nil {
		return client.IgnoreNotFound(err)
	}
	at := time.Unix(last, 0)
	if rec.Status.LastUsedAt != nil && !rec.Status.LastUsedAt.Time.Before(at) {
		return nil
	}
	patch := client.MergeFromWithOptions(rec.DeepCopy(), client.MergeFromWithOptimisticLock{})
	rec.Status.LastUsedAt = &metav1.Time{Time: at}
	return client.IgnoreNotFound(u.client.Status().Patch(ctx, rec, patch))
}
