package utils

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal kills the process if the test binary dies first, so
// an interrupted run leaves no manager behind holding its ports.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
