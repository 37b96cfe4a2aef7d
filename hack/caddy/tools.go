//go:build tools

// Package caddy pins the Caddy release the end-to-end tests put in front of
// the auth server (forward_auth). It is its own module so that Caddy's
// dependencies never reach the operator's go.mod.
package caddy

import (
	_ "github.com/caddyserver/caddy/v2/cmd/caddy"
)
