package controller

import (
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// TestDeadlines checks that a key is woken at the last instant its pass
// asked for, once, and not when it asked for another, asked for none, or
// went; and that superseded instants do not pile up.
func TestDeadlines(t *testing.T) {
	w := newWatchedKeys(nil, "", nil)
	w.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer w.queue.ShutDown()
	if err := w.Replace([]any{watchedKey("a", "uid-a", "1"), watchedKey("b", "uid-b", "2"),
		watchedKey("c", "uid-c", "3")}, "3"); err != nil {
		t.Fatal(err)
	}
	name := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "team-payments", Name: n} }
	start := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	due := func(now time.Time) []string {
		t.Helper()
		wake, _ := w.due(now)
		out := make([]string, 0, len(wake))
		for _, n := range wake {
			out = append(out, n.Name)
		}
		if len(out) == 0 {
			return nil
		}
		slices.Sort(out)
		return out
	}

	w.wakeAt(name("a"), at(time.Minute))
	w.wakeAt(name("b"), at(time.Hour))
	w.wakeAt(name("b"), at(2*time.Minute)) // b's next pass asks for an earlier instant
	w.wakeAt(name("c"), at(3*time.Minute))
	w.wakeAt(name("c"), time.Time{}) // c's next pass asks for none
	w.wakeAt(name("gone"), at(time.Minute))
	if got := due(at(30 * time.Second)); got != nil {
		t.Errorf("woke %v before any deadline", got)
	}
	if wake, next := w.due(at(30 * time.Second)); wake != nil || next != 30*time.Second {
		t.Errorf("next deadline in %v, want 30s", next)
	}
	if got := due(at(2 * time.Minute)); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("woke %v at 2m, want [a b]", got)
	}
	if got := due(at(2 * time.Hour)); got != nil {
		t.Errorf("woke %v for instants superseded or already passed", got)
	}

	// A key deleted and created again under its name keeps no deadline of
	// the one before.
	w.wakeAt(name("a"), at(3*time.Hour))
	if err := w.Add(watchedKey("a", "uid-a2", "9")); err != nil {
		t.Fatal(err)
	}
	if got := due(at(4 * time.Hour)); got != nil {
		t.Errorf("woke %v for the deadline of a key that is gone", got)
	}

	// A key that keeps asking for new instants does not grow the heap
	// past about twice the keys.
	for i := range 1000 {
		w.wakeAt(name("b"), at(time.Duration(i+5)*time.Hour))
	}
	if n := len(w.deadlines); n > 2*len(w.keys)+64 {
		t.Errorf("%d deadlines kept for %d keys", n, len(w.keys))
	}
	if got := due(at(2000 * time.Hour)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("woke %v, want b once, at its last instant", got)
	}
}

// TestDeadlinesPast2262 checks that a key asking to be woken after 2262
// (an expiresAt that far ahead under --max-ttl=0; the CRD holds durations
// to 100 years)
// neither is woken now nor holds up the keys due before it: UnixNano wraps
// such an instant, so it could sort first and look due, or never due.
func TestDeadlinesPast2262(t *testing.T) {
	w := newWatchedKeys(nil, "", nil)
	w.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer w.queue.ShutDown()
	if err := w.Replace([]any{watchedKey("far", "uid-far", "1"), watchedKey("soon", "uid-soon", "2")}, "2"); err != nil {
		t.Fatal(err)
	}
	far, soon := types.NamespacedName{Namespace: "team-payments", Name: "far"}, types.NamespacedName{Namespace: "team-payments", Name: "soon"}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, at := range []time.Time{time.Date(2277, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)} {
		w.wakeAt(far, at)
		w.wakeAt(soon, now.Add(time.Minute))
		if wake, next := w.due(now); len(wake) != 0 || next != time.Minute {
			t.Errorf("far asked for %v: woke %v now, next deadline in %v, want none and 1m", at, wake, next)
		}
		if wake, _ := w.due(now.Add(2 * time.Minute)); !slices.Equal(wake, []types.NamespacedName{soon}) {
			t.Errorf("far asked for %v: woke %v two minutes on, want soon alone", at, wake)
		}
	}
}
