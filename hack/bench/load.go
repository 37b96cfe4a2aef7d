package main

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// maxBackgroundLoad bounds how long background load may run: its
// connections' deadline.
const maxBackgroundLoad = 10 * time.Minute

// backgroundLoad is forward-auth load kept up while something else is
// measured. It is the load generator's open loop (http.go): a constant
// arrival rate over keep-alive connections, each request's latency counted
// from when it was scheduled. Where openLoop runs for a set time, this one
// runs until stopped, so it covers a measurement of unknown length from
// before its start to after its end without a gap.
type backgroundLoad struct {
	rate    float64
	started chan struct{} // closed when the first request is due
	stop    chan struct{}
	done    chan struct{}

	// Valid once done is closed.
	lat      latencies
	achieved float64 // requests per second answered
	ran      time.Duration
	err      error
}

// startBackgroundLoad dials t's connections and starts offering rate
// requests per second to them.
func (lg *loadGenerator) startBackgroundLoad(t *target, rate float64) *backgroundLoad {
	b := &backgroundLoad{rate: rate, started: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = b.run(lg, t)
	}()
	return b
}

// awaitStarted returns once the load runs, or with its error if it could
// not start.
func (b *backgroundLoad) awaitStarted() error {
	select {
	case <-b.started:
		return nil
	case <-b.done:
		if b.err == nil {
			return errors.New("the load stopped before it started")
		}
		return b.err
	}
}

// running reports whether the load is still being offered.
func (b *backgroundLoad) running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// finish stops the load and waits for its last answers.
func (b *backgroundLoad) finish() {
	close(b.stop)
	<-b.done
}

// stopped reports whether finish was called.
func (b *backgroundLoad) stopped() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

func (b *backgroundLoad) run(lg *loadGenerator, t *target) error {
	if b.rate <= 0 {
		return errors.New("offered rate is zero")
	}
	conns, err := lg.dialAll(t, time.Now().Add(maxBackgroundLoad))
	if err != nil {
		return err
	}
	defer closeAll(conns)

	// Workers take due times from one queue: whichever connection is free
	// sends the next request.
	due := make(chan time.Time, 64*len(conns))
	var failed atomic.Bool
	answered := make([][]time.Duration, len(conns))
	errs := make([]error, len(conns))
	var workers sync.WaitGroup
	for i, c := range conns {
		workers.Go(func() {
			for scheduled := range due {
				if failed.Load() {
					continue
				}
				if errs[i] = c.roundTrip(); errs[i] != nil {
					failed.Store(true)
					continue
				}
				answered[i] = append(answered[i], time.Since(scheduled))
			}
		})
	}

	every := time.Duration(float64(time.Second) / b.rate)
	begin := time.Now()
	close(b.started)
	next := begin
	for !failed.Load() && !b.stopped() {
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait) // pacing the arrivals, not waiting for state
		}
		due <- next
		next = next.Add(every)
	}
	close(due)
	workers.Wait()
	b.ran = time.Since(begin)
	var all []time.Duration
	for _, a := range answered {
		all = append(all, a...)
	}
	b.lat, b.achieved = summarize(all), float64(len(all))/b.ran.Seconds()
	return errors.Join(errs...)
}
