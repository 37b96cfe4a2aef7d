package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
	"github.com/apikey-operator/apikey-operator/internal/authserver"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

// httpResult is the forward-auth load test: closed-loop throughput, then
// open-loop latency at half the bare handler's throughput.
type httpResult struct {
	closed           []closedRound
	bareRPS, oursRPS float64 // medians over rounds
	// headersRPS is the median of the bare handler that answers with the
	// auth server's five identity headers: what net/http's header handling
	// alone costs at this load. Not judged.
	headersRPS float64

	openRate float64 // offered load, requests per second
	open     []openRound
	// Medians over rounds of each percentile. headersOpen is the bare
	// handler that writes the five headers, at the same offered load; not
	// judged.
	bareOpen, headersOpen, oursOpen latencies

	err error
}

type closedRound struct{ Bare, Headers, Ours float64 }

type openRound struct {
	Bare, Headers, Ours             latencies
	BareRate, HeadersRate, OursRate float64
}

// alpnHTTP1 is the only protocol the servers offer, as cmd/main.go
// configures the webhook server unless --enable-http2.
const alpnHTTP1 = "http/1.1"

// target is one server under load and the request every connection sends.
type target struct {
	name string
	addr string
	// requests holds one prebuilt request per connection; the two servers
	// get byte-identical requests (only the Host port differs).
	requests [][]byte
}

// runHTTP starts a bare handler and the auth server side by side, with the
// same TLS and http.Server settings, and loads both with the same generator.
func runHTTP(c config, logs *os.File) *httpResult {
	res := &httpResult{}
	res.err = measureHTTP(c, logs, res)
	if res.err != nil {
		harness.Progress("  failed: %v", res.err)
	}
	return res
}

func measureHTTP(c config, logs *os.File, res *httpResult) error {
	dir, err := os.MkdirTemp("", "apikey-bench-http-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	serverTLS, clientTLS, err := benchTLS(dir)
	if err != nil {
		return err
	}

	index := authserver.NewIndex()
	tokens, err := issueInMemory(c.httpKeys, func(k *apikeysv1alpha1.ApiKey, r *apikeysv1alpha1.ApiKeyRecord) {
		index.SetKey(k)
		index.SetRecord(r)
	})
	if err != nil {
		return err
	}
	index.MarkSynced()
	ours := authserver.NewServer(index, authserver.Options{}).Handler()
	bare := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	withHeaders, err := bareWithHeaders(ours, tokens[0])
	if err != nil {
		return err
	}

	errLog := log.New(logs, "bench-http ", log.LstdFlags)
	bareSrv, err := serveLabelled("bare", bare, serverTLS, errLog)
	if err != nil {
		return err
	}
	defer func() { _ = bareSrv.Close() }()
	oursSrv, err := serveLabelled("ours", ours, serverTLS, errLog)
	if err != nil {
		return err
	}
	defer func() { _ = oursSrv.Close() }()
	headersSrv, err := serveLabelled("headers", withHeaders, serverTLS, errLog)
	if err != nil {
		return err
	}
	defer func() { _ = headersSrv.Close() }()

	bareT := newTarget("bare", bareSrv.Addr, tokens, c.httpConns)
	oursT := newTarget("ours", oursSrv.Addr, tokens, c.httpConns)
	headersT := newTarget("headers", headersSrv.Addr, tokens, c.httpConns)
	lg := &loadGenerator{tls: clientTLS, maxRequests: c.httpMaxRequests}

	// Warm up every server (TLS session, GC, CPU frequency) and check that
	// the auth server really says 200 to every connection's token.
	for _, t := range []*target{bareT, headersT, oursT} {
		if _, err := lg.closedLoop(t, c.httpWarmup); err != nil {
			return fmt.Errorf("warming up %s: %w", t.name, err)
		}
	}
	if err := measureClosed(c, lg, bareT, headersT, oursT, res); err != nil {
		return err
	}
	return measureOpen(c, lg, bareT, headersT, oursT, res)
}

// bareWithHeaders is the bare handler answering with the five identity
// headers ours gives tok's key: net/http's work for them (a header map per
// response, its copy when the status is written, the sorted write) and
// nothing of the auth server's own.
func bareWithHeaders(ours http.Handler, tok string) (http.Handler, error) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/auth", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	ours.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("the auth server answered %d to a valid token", rec.Code)
	}
	names := []string{authserver.HeaderUser, authserver.HeaderGroups, authserver.HeaderScopes,
		authserver.HeaderName, authserver.HeaderNamespace}
	values := make([][]string, len(names))
	for i, name := range names {
		values[i] = slices.Clip(rec.Header().Values(name))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		for i, name := range names {
			h[name] = values[i]
		}
		w.WriteHeader(http.StatusOK)
	}), nil
}

// measureClosed runs the rounds of closed-loop (max throughput) load on
// the bare handler and the auth server, alternating which goes first, with
// the bare handler that writes the headers between them.
func measureClosed(c config, lg *loadGenerator, bareT, headersT, oursT *target, res *httpResult) error {
	var bares, headerss, ourss []float64
	for round := range c.httpRounds {
		var r closedRound
		var bareCPU, oursCPU time.Duration // process CPU per request
		for _, t := range ordered(round, bareT, headersT, oursT) {
			cpu := processCPU()
			var rps float64
			var err error
			pprof.Do(context.Background(), pprof.Labels("client", t.name), func(context.Context) {
				rps, err = lg.closedLoop(t, c.httpClosed)
			})
			if err != nil {
				return fmt.Errorf("closed loop on %s: %w", t.name, err)
			}
			perRequest := time.Duration(float64(processCPU()-cpu) / (rps * c.httpClosed.Seconds()))
			switch t {
			case bareT:
				r.Bare, bareCPU = rps, perRequest
			case headersT:
				r.Headers = rps
			default:
				r.Ours, oursCPU = rps, perRequest
			}
		}
		// CPU per request (this process: servers and generator, and a
		// round's 32 handshakes) is a steadier comparison than throughput
		// when other tenants share the machine.
		harness.Progress("  closed loop round %d: bare %.0f req/s, with headers %.0f, auth server %.0f req/s; "+
			"CPU per request bare %s, auth server %s", round+1, r.Bare, r.Headers, r.Ours,
			bareCPU.Round(10*time.Nanosecond), oursCPU.Round(10*time.Nanosecond))
		res.closed = append(res.closed, r)
		bares, headerss, ourss = append(bares, r.Bare), append(headerss, r.Headers), append(ourss, r.Ours)
	}
	res.bareRPS, res.headersRPS, res.oursRPS = median(bares), median(headerss), median(ourss)
	return nil
}

// measureOpen offers half the bare handler's throughput to each server at a
// constant arrival rate and measures latency from each request's scheduled
// send time, so a stalled server cannot hide its queue. The bare handler
// that writes the headers runs between the other two, as in the closed
// loop.
func measureOpen(c config, lg *loadGenerator, bareT, headersT, oursT *target, res *httpResult) error {
	res.openRate = res.bareRPS / 2
	var bare, headers, ours []latencies
	for round := range c.httpOpenRounds {
		var r openRound
		for _, t := range ordered(round, bareT, headersT, oursT) {
			lat, achieved, err := lg.openLoop(t, res.openRate, c.httpOpen)
			if err != nil {
				return fmt.Errorf("open loop on %s: %w", t.name, err)
			}
			switch t {
			case bareT:
				r.Bare, r.BareRate = lat, achieved
			case headersT:
				r.Headers, r.HeadersRate = lat, achieved
			default:
				r.Ours, r.OursRate = lat, achieved
			}
		}
		harness.Progress("  open loop round %d at %.0f req/s: p99 bare %s, with headers %s, auth server %s",
			round+1, res.openRate, r.Bare.P99, r.Headers.P99, r.Ours.P99)
		res.open = append(res.open, r)
		bare, headers, ours = append(bare, r.Bare), append(headers, r.Headers), append(ours, r.Ours)
	}
	res.bareOpen, res.headersOpen, res.oursOpen = medianLatencies(bare), medianLatencies(headers), medianLatencies(ours)
	return nil
}

// medianLatencies is the median over rounds of each percentile.
func medianLatencies(rounds []latencies) latencies {
	p50, p99, p999 := make([]time.Duration, 0, len(rounds)), make([]time.Duration, 0, len(rounds)), make([]time.Duration, 0, len(rounds))
	for _, l := range rounds {
		p50, p99, p999 = append(p50, l.P50), append(p99, l.P99), append(p999, l.P999)
	}
	return latencies{P50: medianDuration(p50), P99: medianDuration(p99), P999: medianDuration(p999)}
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ordered gives the targets in their order in even rounds and reversed in
// odd ones, so drift over the run (thermal, other tenants) favours neither
// the first nor the last.
func ordered(round int, targets ...*target) []*target {
	if round%2 == 1 {
		targets = slices.Clone(targets)
		slices.Reverse(targets)
	}
	return targets
}

// benchTLS writes a CA and serving certificate for 127.0.0.1 and returns the
// server's TLS config (TLS 1.2+, HTTP/1.1 only, as the webhook server is
// configured in cmd/main.go) and a client config trusting the CA.
func benchTLS(dir string) (server, client *tls.Config, err error) {
	caPEM, err := utils.WriteServingCert(dir)
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, errors.New("no CA certificate in the generated PEM")
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{alpnHTTP1},
		Certificates: []tls.Certificate{cert},
	}
	client = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{alpnHTTP1}, RootCAs: pool}
	return server, client, nil
}

// serveLabelled is serveTLS with the pprof label server=name on every
// goroutine that serves (goroutines inherit their creator's labels), so a
// -cpuprofile splits the two servers' work: pprof -tagfocus=server=ours.
func serveLabelled(name string, h http.Handler, tlsCfg *tls.Config, errLog *log.Logger) (srv *tlsServer, err error) {
	pprof.Do(context.Background(), pprof.Labels("server", name), func(context.Context) {
		srv, err = serveTLS(h, tlsCfg, errLog)
	})
	return srv, err
}

// tlsServer is an http.Server on a TLS listener on 127.0.0.1.
type tlsServer struct {
	Addr string
	srv  *http.Server
}

func (s *tlsServer) Close() error { return s.srv.Close() }

// serveTLS serves h with the settings the manager serves the auth
// endpoints with (authserver.HTTPServer), over tlsCfg, on a free loopback
// port.
func serveTLS(h http.Handler, tlsCfg *tls.Config, errLog *log.Logger) (*tlsServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := authserver.HTTPServer(context.Background(), h)
	srv.ErrorLog = errLog
	go func() { _ = srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	return &tlsServer{Addr: ln.Addr().String(), srv: srv}, nil
}

// newTarget prebuilds one GET /auth per connection, each with its own valid
// token, so the index is exercised across keys rather than one hot entry.
func newTarget(name, addr string, tokens []string, conns int) *target {
	t := &target{name: name, addr: addr}
	for i := range conns {
		t.requests = append(t.requests, []byte("GET /auth HTTP/1.1\r\nHost: "+addr+
			"\r\nUser-Agent: apikey-bench\r\nAuthorization: Bearer "+tokens[i%len(tokens)]+"\r\n\r\n"))
	}
	return t
}

// loadGenerator drives HTTP/1.1 keep-alive connections directly: one
// connection per worker, a prebuilt request, a response parser that does not
// allocate. It is much lighter than http.Client, so more of the two cores go
// to the servers under test.
type loadGenerator struct {
	tls *tls.Config
	// maxRequests bounds one measurement, whatever its duration.
	maxRequests int
}

// loadConn is one keep-alive connection and the request it repeats.
type loadConn struct {
	conn *tls.Conn
	br   *bufio.Reader
	req  []byte
}

// dialAll opens one TLS connection per request of t, all of which must
// stay usable until deadline.
func (lg *loadGenerator) dialAll(t *target, deadline time.Time) ([]*loadConn, error) {
	conns := make([]*loadConn, 0, len(t.requests))
	for _, req := range t.requests {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", t.addr, lg.tls)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		_ = conn.SetDeadline(deadline)
		conns = append(conns, &loadConn{conn: conn, br: bufio.NewReader(conn), req: req})
	}
	return conns, nil
}

func closeAll(conns []*loadConn) {
	for _, c := range conns {
		_ = c.conn.Close()
	}
}

// roundTrip sends the request and reads the whole response; anything but
// 200 is an error (the auth server's 200 is what is being measured).
func (c *loadConn) roundTrip() error {
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	return readResponse(c.br)
}

// readResponse reads one HTTP/1.1 response without allocating: the status
// line, the headers (only Content-Length matters) and the body. Its cost
// hardly depends on how many headers a server sends, so the generator,
// which shares the CPUs, does not tax the server with the larger answer.
func readResponse(br *bufio.Reader) error {
	status, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(status) < 12 || !bytes.HasPrefix(status, []byte("HTTP/1.")) {
		return errors.New("malformed status line")
	}
	// Copied: the next read may overwrite the reader's buffer.
	code := [3]byte(status[9:12])
	length, err := readContentLength(br)
	if err != nil {
		return err
	}
	if _, err := br.Discard(length); err != nil {
		return err
	}
	if code != [3]byte{'2', '0', '0'} {
		return fmt.Errorf("got HTTP %s, want 200", code[:])
	}
	return nil
}

// readContentLength reads the header lines up to the blank line and
// returns the Content-Length (0 if none). A line costs one scan for its
// end and a look at its first byte; only one that starts like
// Content-Length or Transfer-Encoding is parsed.
func readContentLength(br *bufio.Reader) (int, error) {
	length := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if line[0] == '\n' || (line[0] == '\r' && len(line) == 2) {
			return length, nil // the blank line after the headers
		}
		if c := line[0] | 0x20; c != 'c' && c != 't' {
			continue
		}
		name, value, found := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(":"))
		switch {
		case !found:
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, errors.New("chunked responses are not expected here")
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = atoi(bytes.TrimSpace(value)); err != nil {
				return 0, err
			}
		}
	}
}

func atoi(b []byte) (int, error) {
	if len(b) == 0 || len(b) > 9 {
		return 0, errors.New("bad Content-Length")
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errors.New("bad Content-Length")
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// closedLoop keeps every connection busy for d and returns completed
// requests per second.
func (lg *loadGenerator) closedLoop(t *target, d time.Duration) (float64, error) {
	conns, err := lg.dialAll(t, time.Now().Add(d+30*time.Second))
	if err != nil {
		return 0, err
	}
	defer closeAll(conns)

	var stop atomic.Bool
	perConn := max(1, lg.maxRequests/len(conns))
	counts := make([]int, len(conns))
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for i, c := range conns {
		wg.Go(func() {
			for !stop.Load() && counts[i] < perConn {
				if errs[i] = c.roundTrip(); errs[i] != nil {
					stop.Store(true)
					return
				}
				counts[i]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(total) / elapsed.Seconds(), nil
}

// openLoop sends rate requests per second for d, at a constant arrival
// rate: one dispatcher releases each request at its scheduled time (all
// overdue ones at once after a late wake-up) to whichever connection is
// free. A request's latency runs from when it was scheduled, not from when a
// connection got free to send it, so queueing behind slow responses counts
// (no coordinated omission). It returns the latency summary and the rate
// actually achieved.
func (lg *loadGenerator) openLoop(t *target, rate float64, d time.Duration) (latencies, float64, error) {
	total := min(int64(rate*d.Seconds()), int64(lg.maxRequests))
	if total <= 0 {
		return latencies{}, 0, errors.New("offered rate is zero")
	}
	conns, err := lg.dialAll(t, time.Now().Add(d+30*time.Second))
	if err != nil {
		return latencies{}, 0, err
	}
	defer closeAll(conns)

	due := make(chan time.Time, 64*len(conns))
	samples := make([][]time.Duration, len(conns))
	errs := make([]error, len(conns))
	var failed atomic.Bool
	var wg sync.WaitGroup
	for i, c := range conns {
		samples[i] = make([]time.Duration, 0, int(total)/len(conns)+1)
		wg.Go(func() {
			for scheduled := range due {
				if failed.Load() {
					continue // drain, so the dispatcher never blocks
				}
				if errs[i] = c.roundTrip(); errs[i] != nil {
					failed.Store(true)
					continue
				}
				samples[i] = append(samples[i], time.Since(scheduled))
			}
		})
	}

	interval := float64(time.Second) / rate
	start := time.Now().Add(20 * time.Millisecond)
	for n := int64(0); n < total && !failed.Load(); n++ {
		scheduled := start.Add(time.Duration(float64(n) * interval))
		if wait := time.Until(scheduled); wait > 0 {
			time.Sleep(wait) // pacing the arrivals, not waiting for state
		}
		due <- scheduled
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return latencies{}, 0, err
	}
	all := make([]time.Duration, 0, total)
	for _, s := range samples {
		all = append(all, s...)
	}
	return summarize(all), float64(len(all)) / elapsed.Seconds(), nil
}
