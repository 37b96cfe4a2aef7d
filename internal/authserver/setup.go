package authserver

import (
	"fmt"
	"net/http"

	ctrl "sigs.k8s.io/controller-runtime"
)

// The auth server reads keys, records and namespaces (whether one is being
// deleted) and writes only records' status, which issuance never reads
// (last-used times).
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeyrecords,verbs=get;list;watch
// +kubebuilder:rbac:groups=apikeys.dev,resources=apikeyrecords/status,verbs=get;patch

// SetupWithManager feeds s's index from its own watches, serves the
// endpoints on the manager's webhook server (every replica, no leader
// needed), adds a readiness check that fails until the index has synced,
// and starts the last-used flusher. A webhook server from s.WebhookServer
// already serves them ahead of its ServeMux; any other gets them on its
// ServeMux.
func (s *Server) SetupWithManager(mgr ctrl.Manager) error {
	if srv := mgr.GetWebhookServer(); s.front == nil || srv.WebhookMux() != s.front.WebhookMux() {
		s.Register(registrar{srv})
	}
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
