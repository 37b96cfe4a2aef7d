package controller

import (
	"container/heap"
	"context"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// The key watch wakes each key at the instant its last pass asked for (an
// expiry, a warning, a grace end, a Secret's deleteAfter), in place of the
// work queue's timers: for each key waiting, controller-runtime's queue
// keeps an item, a tree node and a metrics entry, about 260 bytes at 100k
// keys, where this keeps one heap entry and the instant in the key's state.

// deadline is a key to wake at an instant (Unix nanoseconds).
type deadline struct {
	at   int64
	name types.NamespacedName
}

// deadlineHeap orders deadlines, earliest first. An entry whose key has
// since asked for another instant, or gone, is dropped when it comes due.
type deadlineHeap []deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h deadlineHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deadlineHeap) Push(x any)        { *h = append(*h, x.(deadline)) }
func (h *deadlineHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	*h = old[:len(old)-1]
	return d
}

// wakeAt has the key name woken at at, in place of any instant it asked
// for before; a zero at asks for none. A key the watch does not show is
// not woken. An instant past 2262, which UnixNano would wrap into the past
// (a pass asking for it would be woken at once, and ask again, forever),
// is held as the last instant an int64 holds.
func (w *watchedKeys) wakeAt(name types.NamespacedName, at time.Time) {
	var ns int64
	switch {
	case at.IsZero():
	case at.After(time.Unix(0, math.MaxInt64)):
		ns = math.MaxInt64
	default:
		ns = at.UnixNano()
	}
	w.mu.Lock()
	s, ok := w.keys[name]
	if !ok || s.wakeAt == ns {
		w.mu.Unlock()
		return
	}
	s.wakeAt = ns
	w.keys[name] = s
	earliest := false
	if ns != 0 {
		earliest = len(w.deadlines) == 0 || ns < w.deadlines[0].at
		heap.Push(&w.deadlines, deadline{at: ns, name: name})
		w.compactDeadlines()
	}
	w.mu.Unlock()
	if earliest {
		select {
		case w.sooner <- struct{}{}:
		default:
		}
	}
}

// compactDeadlines drops the entries no key asks for any more once they
// outnumber the keys, so that keys that keep asking for new instants far
// ahead do not grow the heap. Called with w.mu held.
func (w *watchedKeys) compactDeadlines() {
	if len(w.deadlines) <= 2*len(w.keys)+64 {
		return
	}
	kept := w.deadlines[:0]
	for _, d := range w.deadlines {
		if s, ok := w.keys[d.name]; ok && s.wakeAt == d.at {
			kept = append(kept, d)
		}
	}
	clear(w.deadlines[len(kept):])
	w.deadlines = kept
	heap.Init(&w.deadlines)
}

// due takes the deadlines that have come by now, and says how long until
// the next one (0 if none).
func (w *watchedKeys) due(now time.Time) (wake []types.NamespacedName, next time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.deadlines) > 0 {
		d := w.deadlines[0]
		if wait := time.Duration(d.at - now.UnixNano()); wait > 0 {
			return wake, wait
		}
		heap.Pop(&w.deadlines)
		if s, ok := w.keys[d.name]; ok && s.wakeAt == d.at {
			s.wakeAt = 0
			w.keys[d.name] = s
			wake = append(wake, d.name)
		}
	}
	return wake, 0
}

// runDeadlines wakes keys as their deadlines come, until ctx ends.
func (w *watchedKeys) runDeadlines(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wake, next := w.due(time.Now())
		for _, name := range wake {
			w.queue.Add(reconcile.Request{NamespacedName: name})
		}
		if next == 0 {
			next = time.Hour
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-w.sooner:
		case <-timer.C:
		}
	}
}
