//go:build !linux

package utils

import "os/exec"

// setParentDeathSignal is Linux-only; elsewhere an interrupted run may leave
// the process behind.
func setParentDeathSignal(*exec.Cmd) {}
