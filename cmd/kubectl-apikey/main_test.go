package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorsExitNonZero runs the built binary as kubectl runs a plugin: a
// failing command exits 1, says why on stderr as kubectl would ("error: …")
// and prints nothing on stdout, where a script reads its output.
func TestErrorsExitNonZero(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kubectl-apikey")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A cluster that refuses connections: port 1 on loopback has no listener.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: nobody, user: {}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
`), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"unknown output format", []string{"list", "-o", "xml"},
			`error: unknown output format "xml": -o must be one of table, wide, json, yaml, name`},
		{"cluster unreachable", []string{"list"}, "error: cannot reach the Kubernetes API server"},
		{"unknown command", []string{"frobnicate"}, `error: unknown command "frobnicate" for "kubectl apikey"`},
		{"missing NAME", []string{"get-token"}, "error: get-token needs exactly one ApiKey NAME, got 0 arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("kubectl-apikey %s: got %v, want exit status 1", strings.Join(tc.args, " "), err)
			}
			if !strings.HasPrefix(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr is %q, want it to start with %q", stderr.String(), tc.wantStderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout is %q, want nothing", stdout.String())
			}
		})
	}
}
