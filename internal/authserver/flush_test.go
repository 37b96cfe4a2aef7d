package authserver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
)

// TestUsageFlusher runs the auth server as the auth-only Deployment does
// (its own ClusterRole from config/auth-server, its own watches) against a
// real API server, and checks that last use lands in the used token's
// ApiKeyRecord status, only moves forward, survives a conflict with another
// replica, and never touches the ApiKey, which the auth server may not write.
func TestUsageFlusher(t *testing.T) { //nolint:gocyclo // a flat sequence of checks, each one case
	ctx, cancel, env, admin := startControlPlane(t)
	scheme := testenv.Scheme
	mgr, index := startAuthOnly(ctx, cancel, t, env, admin)
	until(ctx, t, "the index has synced", func() bool { return index.Synced() })

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-payments"}}
	key := &apikeysv1alpha1.ApiKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "billing-export"}}
	tok := stableToken(apikeysv1alpha1.DefaultPrefix, "flush")
	for _, obj := range []client.Object{ns, key} {
		if err := admin.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	rec := issuedRecord(tok, key)
	if err := admin.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	until(ctx, t, "the token authenticates", func() bool { _, code := index.Verify(tok, time.Now()); return code == CodeValid })
	entry, _ := index.Verify(tok, time.Now())
	keyVersion := get(ctx, t, admin, key).GetResourceVersion()
	flusher := &usageFlusher{index: index, client: mgr.GetClient(), every: time.Minute}
	used := time.Now().Add(-time.Hour).Truncate(time.Second)

	t.Run("the record's status gets the last use", func(t *testing.T) {
		entry.markUsed(used)
		flusher.flush(ctx, time.Now(), flusher.every)
		assertLastUsed(ctx, t, admin, rec, used)
		if pending := index.unflushedUses(); len(pending) != 0 {
			t.Errorf("%d uses still to flush after a flush", len(pending))
		}
	})

	t.Run("nothing new, nothing written", func(t *testing.T) {
		before := get(ctx, t, admin, rec).GetResourceVersion()
		entry.markUsed(used) // the same second again
		flusher.flush(ctx, time.Now(), flusher.every)
		if after := get(ctx, t, admin, rec).GetResourceVersion(); after != before {
			t.Errorf("the flusher wrote the record again (resourceVersion %s → %s) without a newer use", before, after)
		}
	})

	t.Run("never backwards over another replica's later use", func(t *testing.T) {
		later := used.Add(30 * time.Minute)
		writeLastUsed(ctx, t, admin, rec, later)
		until(ctx, t, "the index sees the other replica's write", func() bool { return indexedLastUse(index, entry).Equal(later) })
		entry.markUsed(used.Add(time.Second))
		flusher.flush(ctx, time.Now(), flusher.every)
		assertLastUsed(ctx, t, admin, rec, later)
		if pending := index.unflushedUses(); len(pending) != 0 {
			t.Errorf("a use older than the record's is retried: %d pending", len(pending))
		}
	})

	// A replica that has not yet seen another's write holds the record as
	// it was: its patch must be refused, and succeed once it has caught up.
	t.Run("a conflict is retried, not forced", func(t *testing.T) {
		stale := get(ctx, t, admin, rec).(*apikeysv1alpha1.ApiKeyRecord)
		behind := NewIndex()
		behind.SetKey(get(ctx, t, admin, key).(*apikeysv1alpha1.ApiKey))
		behind.SetRecord(stale)
		other := used.Add(40 * time.Minute)
		writeLastUsed(ctx, t, admin, rec, other)
		mine := used.Add(50 * time.Minute)
		behindEntry, _ := behind.Verify(tok, time.Now())
		behindEntry.markUsed(mine)
		lagging := &usageFlusher{index: behind, client: mgr.GetClient(), every: time.Minute}
		lagging.flush(ctx, time.Now(), lagging.every)
		assertLastUsed(ctx, t, admin, rec, other)
		if pending := behind.unflushedUses(); len(pending) != 1 {
			t.Fatalf("after a conflict %d uses are pending, want the one that was refused", len(pending))
		}
		behind.UpdateRecord(get(ctx, t, admin, rec).(*apikeysv1alpha1.ApiKeyRecord))
		lagging.flush(ctx, time.Now(), lagging.every)
		assertLastUsed(ctx, t, admin, rec, mine)
		until(ctx, t, "the index sees the write", func() bool { return indexedLastUse(index, entry).Equal(mine) })
		if e, _ := index.Verify(tok, time.Now()); e != entry {
			t.Error("a write to the record's status replaced its entry in the index")
		}
	})

	// Every replica sees each key's uses: were each to write them, a key
	// used everywhere would cost a write per replica per interval.
	t.Run("a record written within the interval waits, so replicas together write about once", func(t *testing.T) {
		now := time.Now().Truncate(time.Second)
		writeLastUsed(ctx, t, admin, rec, now.Add(-10*time.Second)) // another replica, this tick
		until(ctx, t, "the index sees the other replica's write", func() bool {
			return indexedLastUse(index, entry).Equal(now.Add(-10 * time.Second))
		})
		before := get(ctx, t, admin, rec).GetResourceVersion()
		entry.markUsed(now.Add(-5 * time.Second))
		flusher.flush(ctx, now, flusher.every)
		if after := get(ctx, t, admin, rec).GetResourceVersion(); after != before {
			t.Fatalf("the record, written 10 s ago, was written again within the interval")
		}
		if pending := index.unflushedUses(); len(pending) != 1 {
			t.Fatalf("%d uses pending after waiting, want the one that waits", len(pending))
		}
		flusher.flush(ctx, now.Add(flusher.every), flusher.every)
		assertLastUsed(ctx, t, admin, rec, now.Add(-5*time.Second))

		t.Log("a replica that stops writes what it has at once")
		entry.markUsed(now)
		until(ctx, t, "the index sees the write", func() bool { return indexedLastUse(index, entry).Equal(now.Add(-5 * time.Second)) })
		flusher.flush(ctx, now, 0)
		assertLastUsed(ctx, t, admin, rec, now)
	})

	t.Run("the ApiKey is never written", func(t *testing.T) {
		if got := get(ctx, t, admin, key).GetResourceVersion(); got != keyVersion {
			t.Errorf("the ApiKey changed (resourceVersion %s → %s) while the auth server flushed", keyVersion, got)
		}
		authClient, err := client.New(mgr.GetConfig(), client.Options{Scheme: scheme})
		if err != nil {
			t.Fatal(err)
		}
		forged := key.DeepCopy()
		forged.Status.RecordName = "sha256-forged"
		err = authClient.Status().Patch(ctx, forged, client.MergeFrom(key))
		if !apierrors.IsForbidden(err) {
			t.Errorf("the auth server's role lets it patch ApiKey status: %v", err)
		}
	})
}

// startControlPlane starts kube-apiserver and etcd for t, stopped when t
// ends, and returns a context cancelled before they stop, and an admin
// client.
func startControlPlane(t *testing.T) (context.Context, context.CancelFunc, *envtest.Environment, client.Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	env, admin, err := testenv.Start(testenv.Options{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	return ctx, cancel, env, admin
}

// startAuthOnly starts a manager with the index's feeds, as the auth-only
// Deployment's ServiceAccount, and has it stopped (cancel) before the
// control plane is; it returns the manager and its index.
func startAuthOnly(ctx context.Context, cancel context.CancelFunc, t *testing.T, env *envtest.Environment,
	admin client.Client) (ctrl.Manager, *Index) {
	t.Helper()
	mgr, err := ctrl.NewManager(authServerUser(ctx, t, env, admin), ctrl.Options{
		Scheme:  testenv.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: CacheOptions()},
	})
	if err != nil {
		t.Fatal(err)
	}
	index := NewIndex()
	if err := mgr.Add(&indexFeeder{index: index, mgr: mgr}); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(ctx) }()
	t.Cleanup(func() { // before the control plane stops
		cancel()
		if err := <-stopped; err != nil {
			t.Error(err)
		}
	})
	return mgr, index
}

// authServerUser binds config/auth-server's ClusterRole, as shipped, to a
// new user and returns that user's config.
func authServerUser(ctx context.Context, t *testing.T, env *envtest.Environment, admin client.Client) *rest.Config {
	t.Helper()
	manifest, err := os.ReadFile(filepath.Join("..", "..", "config", "auth-server", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(manifest, role); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "auth-server"}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := admin.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	user, err := env.AddUser(envtest.User{Name: "auth-server"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return user.Config()
}

// until polls cond until it holds, failing the test after 20 seconds.
func until(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 20*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting until %s: %v", what, err)
	}
}

// get reads obj's current state through c.
func get(ctx context.Context, t *testing.T, c client.Client, obj client.Object) client.Object {
	t.Helper()
	got := obj.DeepCopyObject().(client.Object)
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatal(err)
	}
	return got
}

// indexedLastUse is the record status.lastUsedAt the index last saw for
// e's record; zero if unset.
func indexedLastUse(index *Index, e *Entry) time.Time {
	index.mu.RLock()
	defer index.mu.RUnlock()
	if e.record.usedAt == 0 {
		return time.Time{}
	}
	return time.Unix(e.record.usedAt, 0)
}

// lastUsedIn is rec's status.lastUsedAt as c reads it; zero if unset.
func lastUsedIn(ctx context.Context, c client.Client, rec *apikeysv1alpha1.ApiKeyRecord) time.Time {
	got := &apikeysv1alpha1.ApiKeyRecord{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(rec), got); err != nil || got.Status.LastUsedAt == nil {
		return time.Time{}
	}
	return got.Status.LastUsedAt.Time
}

func assertLastUsed(ctx context.Context, t *testing.T, c client.Client, rec *apikeysv1alpha1.ApiKeyRecord, want time.Time) {
	t.Helper()
	if got := lastUsedIn(ctx, c, rec); !got.Equal(want) {
		t.Errorf("record status.lastUsedAt = %v, want %v", got, want)
	}
}

// writeLastUsed sets rec's status.lastUsedAt as another replica would.
func writeLastUsed(ctx context.Context, t *testing.T, c client.Client, rec *apikeysv1alpha1.ApiKeyRecord, at time.Time) {
	t.Helper()
	patch := client.MergeFrom(&apikeysv1alpha1.ApiKeyRecord{})
	other := &apikeysv1alpha1.ApiKeyRecord{
		ObjectMeta: metav1.ObjectMeta{Name: rec.Name},
		Status:     apikeysv1alpha1.ApiKeyRecordStatus{LastUsedAt: &metav1.Time{Time: at}},
	}
	if err := c.Status().Patch(ctx, other, patch); err != nil {
		t.Fatal(err)
	}
}
