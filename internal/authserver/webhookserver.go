package authserver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// WebhookServer is the manager's webhook server with the auth endpoints
// ahead of the admission webhooks' ServeMux, on one port with one TLS
// setup: /tokenreview, /verify, /auth and /auth/… are answered on their
// path as sent, every other path goes to the ServeMux as before. A ServeMux
// cleans every path it sees, so in front of it nothing would answer /auth//x
// (Envoy's path_prefix followed by a client's path) but a redirect. The
// endpoints also skip controller-runtime's per-webhook instrumentation,
// which wraps every response writer; they keep metrics of their own.
type WebhookServer struct {
	// Server registers the admission webhooks on the ServeMux; it is never
	// started.
	webhook.Server

	opts    webhook.Options
	auth    *Server
	started atomic.Bool
	// readTimeout and writeTimeout, if set, replace requestReadTimeout
	// and responseWriteTimeout (tests).
	readTimeout, writeTimeout time.Duration
}

var _ webhook.Server = (*WebhookServer)(nil)

// WebhookServer returns a webhook server for o that serves s's endpoints
// ahead of its ServeMux. Build the manager with it (or with a
// certs.WebhookServer around it); SetupWithManager then leaves the ServeMux
// alone.
func (s *Server) WebhookServer(o webhook.Options) *WebhookServer {
	o = webhookDefaults(o)
	ws := &WebhookServer{Server: webhook.NewServer(o), opts: o, auth: s}
	s.front = ws
	return ws
}

// AdmissionServer returns a webhook server for o that serves the
// admission webhooks only, with the settings the auth endpoints get
// (HTTPServer): a manager run without the auth server is still cut off
// from clients that send a request slowly.
func AdmissionServer(o webhook.Options) *WebhookServer {
	o = webhookDefaults(o)
	return &WebhookServer{Server: webhook.NewServer(o), opts: o}
}

// webhookDefaults fills in what controller-runtime's webhook server
// defaults, so both read the same certificate from the same place.
func webhookDefaults(o webhook.Options) webhook.Options {
	if o.WebhookMux == nil {
		o.WebhookMux = http.NewServeMux()
	}
	if o.Port == 0 {
		o.Port = webhook.DefaultPort
	}
	if o.CertDir == "" {
		o.CertDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
	}
	if o.CertName == "" {
		o.CertName = "tls.crt"
	}
	if o.KeyName == "" {
		o.KeyName = "tls.key"
	}
	return o
}

// WebhookMux is the admission webhooks' ServeMux.
func (s *WebhookServer) WebhookMux() *http.ServeMux { return s.opts.WebhookMux }

// ServeHTTP routes a request to an auth endpoint by its path as sent, or
// to the ServeMux.
func (s *WebhookServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ep, ok := endpointFor(r.URL.Path); ok && s.auth != nil {
		s.auth.serve(ep, s.auth.handlers[ep], w, r)
		return
	}
	s.opts.WebhookMux.ServeHTTP(w, r)
}

// Start serves until ctx ends as controller-runtime's webhook server does:
// the certificate from TLSOpts' GetCertificate, or from CertDir and
// reloaded when it changes; HTTPServer's settings; a minute to drain.
func (s *WebhookServer) Start(ctx context.Context) error {
	log := ctrl.Log.WithName("webhook-server")
	o := s.opts
	if o.Port < 0 {
		log.Info("Webhook server is disabled")
		return nil
	}
	if o.ClientCAName != "" {
		return errors.New("authserver: the webhook server does not verify client certificates; leave ClientCAName empty")
	}
	cfg := &tls.Config{NextProtos: []string{"h2"}}
	for _, op := range o.TLSOpts {
		op(cfg)
	}
	if cfg.GetCertificate == nil {
		watcher, err := certwatcher.New(filepath.Join(o.CertDir, o.CertName), filepath.Join(o.CertDir, o.KeyName))
		if err != nil {
			return err
		}
		cfg.GetCertificate = watcher.GetCertificate
		go func() {
			if err := watcher.Start(ctx); err != nil {
				log.Error(err, "Certificate watcher stopped")
			}
		}()
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)), cfg)
	if err != nil {
		return err
	}
	srv := HTTPServer(ctx, s)
	if s.readTimeout > 0 {
		srv.ReadHeaderTimeout, srv.ReadTimeout = s.readTimeout, s.readTimeout
	}
	if s.writeTimeout > 0 {
		srv.WriteTimeout, srv.HTTP2.WriteByteTimeout = s.writeTimeout, s.writeTimeout
	}
	drained := make(chan struct{})
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			log.Error(err, "Could not shut the webhook server down cleanly")
		}
		close(drained)
	}()

	log.Info("Serving the auth endpoints and the admission webhooks", "host", o.Host, "port", o.Port)
	s.started.Store(true)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-drained
	return nil
}

// HTTPServer serves h as the auth endpoints are served: keep-alive
// connections idle up to 90 s (http.DefaultTransport's keep-alive timeout),
// and a request must arrive whole within requestReadTimeout, its headers
// within maxServerHeaderBytes+4 KiB (net/http answers 431 past that). A client
// that sends a body slowly, or stops partway, then holds its buffer for
// seconds, not for as long as it likes; so does one that stops reading its
// answers (responseWriteTimeout; HTTP/2's WriteByteTimeout when
// --enable-http2). hack/bench serves its bare handler with it too, so both
// are measured with the same settings.
func HTTPServer(ctx context.Context, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		MaxHeaderBytes:    maxServerHeaderBytes,
		IdleTimeout:       90 * time.Second,
		ReadHeaderTimeout: requestReadTimeout,
		ReadTimeout:       requestReadTimeout,
		WriteTimeout:      responseWriteTimeout,
		HTTP2:             &http.HTTP2Config{WriteByteTimeout: responseWriteTimeout},
	}
}

const (
	// requestReadTimeout bounds the time from a request's first byte to
	// its body's last: kube-apiserver sends an admission review, and a
	// proxy a forward-auth request, in far less.
	requestReadTimeout = 10 * time.Second
	// responseWriteTimeout bounds the time from a request's headers to
	// its answer's last byte written: the body's read (requestReadTimeout)
	// and the handler (microseconds; kube-apiserver gives up on an
	// admission webhook after 10 s by default). Without it a client that
	// pipelines requests and never reads the answers holds its connection,
	// and the goroutine and buffers behind it, for as long as its kernel
	// acknowledges TCP's zero-window probes: forever. With it the
	// connection closes, TLS's close_notify waiting at most 5 s more.
	responseWriteTimeout = 15 * time.Second
	// maxServerHeaderBytes is what net/http reads of a request's headers
	// before it answers 431 on its own; the endpoints answer 431 past
	// maxHeaderBytes.
	maxServerHeaderBytes = 64 << 10
)

// StartedChecker is healthy once the server listens: its port is bound,
// so connections queue until they are served.
func (s *WebhookServer) StartedChecker() healthz.Checker {
	return func(*http.Request) error {
		if s.opts.Port >= 0 && !s.started.Load() {
			return errors.New("the webhook server has not been started yet")
		}
		return nil
	}
}
