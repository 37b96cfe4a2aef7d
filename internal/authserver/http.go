package authserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/apikey-operator/apikey-operator/pkg/apikeyauth"
)

const (
	// maxBodyBytes bounds a request body; larger ones get 413. A
	// TokenReview carries whatever bearer token kube-apiserver was shown
	// (an OIDC JWT with many groups runs to a few KiB), a /verify body at
	// most 64 scopes: 64 KiB leaves room for both, and bounds what a slow
	// client can hold of the server's memory per connection.
	maxBodyBytes = 64 << 10
	// maxHeaderBytes bounds a request's headers; larger ones get 431.
	maxHeaderBytes = 8 << 10
)

// Options configure the auth server.
type Options struct {
	// APIKeyHeader is the request header forward-auth also reads a token
	// from, after Authorization: Bearer. Default X-API-Key.
	APIKeyHeader string
	// UsageFlushInterval is how often last-used times are written to the
	// status of the tokens' ApiKeyRecords, at most once per record (token).
	// Default one minute.
	UsageFlushInterval time.Duration
	// Now returns the current time; tests may pin it. Default time.Now,
	// read once per request: the time a request is judged at is the time
	// its latency is measured from.
	Now func() time.Time
}

// Server answers token questions from an Index over HTTP.
type Server struct {
	index    *Index
	opts     Options
	metrics  *metrics
	handlers [numEndpoints]handlerFunc
	// pinnedClock is set when Options.Now is not time.Now's default.
	pinnedClock bool
	// front is the WebhookServer serving the endpoints, if one was built.
	front *WebhookServer
}

// NewServer returns a Server answering from index.
func NewServer(index *Index, opts Options) *Server {
	if opts.APIKeyHeader == "" {
		opts.APIKeyHeader = "X-API-Key"
	}
	opts.APIKeyHeader = http.CanonicalHeaderKey(opts.APIKeyHeader)
	if opts.UsageFlushInterval <= 0 {
		opts.UsageFlushInterval = time.Minute
	}
	pinnedClock := opts.Now != nil
	if !pinnedClock {
		opts.Now = time.Now
	}
	s := &Server{index: index, opts: opts, metrics: metricsFor(index), pinnedClock: pinnedClock}
	s.handlers = [numEndpoints]handlerFunc{
		endpointTokenReview: s.serveTokenReview,
		endpointForwardAuth: s.serveForwardAuth,
		endpointVerify:      s.serveVerify,
	}
	return s
}

// Index is the index the server answers from.
func (s *Server) Index() *Index { return s.index }

// Handler returns the endpoints on a handler tree of their own, routed by
// the path as sent (see ServeHTTP).
func (s *Server) Handler() http.Handler { return s }

// Register mounts the endpoints on mux, for a server whose root handler is
// not ours (controller-runtime's webhook server). A ServeMux cleans paths
// first: it redirects /auth//x, which Envoy's path_prefix produces, rather
// than answer it. WebhookServer serves them ahead of its ServeMux instead.
func (s *Server) Register(mux interface{ Handle(string, http.Handler) }) {
	for _, path := range []string{"/tokenreview", "/auth", "/auth/", "/verify"} {
		mux.Handle(path, s)
	}
}

// endpointFor names the endpoint that answers path, taken as sent: /auth
// and anything under /auth/ (a proxy may append a client's path of any
// shape), /tokenreview and /verify.
func endpointFor(path string) (endpoint, bool) {
	switch {
	case path == "/auth" || strings.HasPrefix(path, "/auth/"):
		return endpointForwardAuth, true
	case path == "/tokenreview":
		return endpointTokenReview, true
	case path == "/verify":
		return endpointVerify, true
	}
	return 0, false
}

// ServeHTTP answers a request for one of the endpoints, any other path with
// 404. Nothing is cleaned or redirected.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep, ok := endpointFor(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	s.serve(ep, s.handlers[ep], w, r)
}

// handlerFunc answers one request, judged at now, and returns its result
// for metrics.
type handlerFunc func(w http.ResponseWriter, r *http.Request, now time.Time) result

// serve answers r at ep with h, after bounding the size of its headers
// (bodies are bounded where they are read), and records metrics. A panic
// (none is known: the fuzz targets look for them) becomes a plain 500 whose
// log line names only the endpoint, never the request.
func (s *Server) serve(ep endpoint, h handlerFunc, w http.ResponseWriter, r *http.Request) {
	// One clock read serves both the latency and the verdict (a clock read
	// is two vDSO calls, not free at tens of thousands of requests a second).
	start := time.Now()
	now := start
	if s.pinnedClock {
		now = s.opts.Now()
	}
	defer func() {
		if p := recover(); p != nil {
			if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(p)
			}
			ctrl.Log.WithName("authserver").Info("Recovered from a panic while answering", "endpoint", ep.String())
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	res := resultBadRequest
	if headerBytes(r.Header) > maxHeaderBytes {
		http.Error(w, "request headers too large", http.StatusRequestHeaderFieldsTooLarge)
	} else {
		res = h(w, r, now)
	}
	s.metrics.observe(ep, res, time.Since(start))
}

func headerBytes(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// readJSON reads a POSTed JSON body of at most maxBodyBytes of UTF-8 into v.
// On failure it has answered the request and returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "request body larger than 64 KiB")
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, "could not read the request body")
		return false
	case !utf8.Valid(body):
		writeError(w, http.StatusBadRequest, "request body is not UTF-8")
		return false
	}
	// The decoder's errors can quote the input, which may hold a token, so
	// the answer names only the kind of failure.
	if err := json.Unmarshal(body, v); err != nil {
		writeError(w, http.StatusBadRequest, "request body is not the expected JSON")
		return false
	}
	return true
}

// tokenReadable answers 400 to a /verify token that is empty or longer than
// apikeyauth.MaxTokenLength: a request with no token to judge, or with more
// than any forward-auth request could carry, is bad input, not a question
// about a token. On failure it has answered the request and returns false.
func tokenReadable(w http.ResponseWriter, tok string) bool {
	switch {
	case tok == "":
		writeError(w, http.StatusBadRequest, tokenRequired)
	case len(tok) > apikeyauth.MaxTokenLength:
		writeError(w, http.StatusBadRequest, tokenTooLong)
	default:
		return true
	}
	return false
}

const tokenRequired = "the token is required"

var tokenTooLong = fmt.Sprintf("the token is longer than %d bytes", apikeyauth.MaxTokenLength)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
