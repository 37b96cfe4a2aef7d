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
