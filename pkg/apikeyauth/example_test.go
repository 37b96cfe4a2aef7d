package apikeyauth_test

import (
	"errors"
	"fmt"
	"log"
	"net/http"

	"github.com/apikey-operator/apikey-operator/pkg/apikeyauth"
)

func ExampleClient_Middleware() {
	auth, err := apikeyauth.New(apikeyauth.Config{
		URL:    "https://apikey-operator-webhook-service.apikey-operator-system.svc",
		CAFile: "/etc/apikey-operator/ca.crt",
		// Only keys from the namespaces this service trusts: anyone who may
		// create ApiKeys elsewhere could give a key the scopes checked below.
		Namespaces: []string{"team-orders"},
	})
	if err != nil {
		log.Fatal(err)
	}

	orders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := apikeyauth.FromContext(r.Context())
		_, _ = fmt.Fprintf(w, "orders for %s (ApiKey %s/%s)\n", id.Username, id.Namespace, id.Name)
	})
	http.Handle("GET /orders", auth.Middleware("orders:read")(orders))
	log.Fatal(http.ListenAndServe(":8080", nil))
}

func ExampleClient_Verify() {
	auth, err := apikeyauth.New(apikeyauth.Config{
		URL:    "https://apikey-operator-webhook-service.apikey-operator-system.svc",
		CAFile: "/etc/apikey-operator/ca.crt",
		// Only keys from the namespaces this service trusts: anyone who may
		// create ApiKeys elsewhere could give a key the scopes checked below.
		Namespaces: []string{"team-orders"},
	})
	if err != nil {
		log.Fatal(err)
	}

	handle := func(w http.ResponseWriter, r *http.Request) {
		id, err := auth.Verify(r.Context(), r.Header.Get("X-API-Key"), "orders:write")
		var rejected *apikeyauth.RejectedError
		switch {
		case errors.Is(err, apikeyauth.ErrUnavailable):
			http.Error(w, "try again", http.StatusServiceUnavailable)
		case errors.Is(err, apikeyauth.ErrInsufficientScope):
			http.Error(w, "not allowed", http.StatusForbidden)
		case errors.As(err, &rejected):
			http.Error(w, "invalid API key ("+rejected.Code+")", http.StatusUnauthorized)
		default:
			_, _ = fmt.Fprintf(w, "order placed by %s\n", id.Username)
		}
	}
	http.HandleFunc("POST /orders", handle)
}
