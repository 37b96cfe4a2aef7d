package utils

import (
	"bytes"
	"os/exec"
	"strings"
)

// Kubectl runs the kubectl at path with a kubeconfig and returns its stdout
// and stderr, trimmed. Only the kubeconfig file carries a credential, so
// neither output, nor a failure message built from them, shows it.
func Kubectl(path, kubeconfig string, args ...string) (string, string, error) {
	cmd := exec.Command(path, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()), err
}

// Whoami is `kubectl auth whoami`'s username under kubeconfig, or "error: "
// and kubectl's complaint.
func Whoami(path, kubeconfig string) string {
	out, errOut, err := Kubectl(path, kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil {
		return "error: " + errOut
	}
	return out
}
