//go:build tools

// Package krew pins krew, which make plugin-archives uses to check the
// plugin's krew manifest (validate-krew-manifest) and to install the plugin
// from its archive, as a user would. It is its own module: krew requires a
// client-go older than the operator's.
package krew

import (
	_ "sigs.k8s.io/krew/cmd/krew"
	_ "sigs.k8s.io/krew/cmd/validate-krew-manifest"
)
