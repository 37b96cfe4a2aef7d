// Command demo starts a throwaway control plane (the kube-apiserver and etcd
// that tests use), wires the auth server into it as its token webhook, runs
// the manager, and shows one ApiKey at work: kubectl authenticating with it,
// forward-auth, /verify, a rotation with a grace period, then suspension. It
// stays up until Ctrl-C, or exits after the transcript when DEMO_ONCE=1. Run
// it with `make demo`.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/apikey-operator/apikey-operator/internal/testenv"
	"github.com/apikey-operator/apikey-operator/test/utils"
)

const (
	sample = "config/samples/apikeys_v1alpha1_apikey.yaml"
	// demoKey is the ApiKey the sample creates, as kubectl names it.
	demoKey = "apikey/ci-deployer"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	dir        string
	kubectl    string
	kubeconfig string
	host       string
	caData     []byte
	authURL    string
	authClient *http.Client
}

func run() error {
	d := &demo{}
	var err error
	if d.dir, err = os.MkdirTemp("", "apikey-demo-"); err != nil {
		return err
	}
	assets, err := utils.ControlPlaneDir()
	if err != nil {
		return err
	}
	d.kubectl = filepath.Join(assets, "kubectl")

	step("Starting a local control plane (kube-apiserver + etcd from bin/k8s)")
	certDir := filepath.Join(d.dir, "certs")
	caPEM, err := utils.WriteServingCert(certDir)
	if err != nil {
		return err
	}
	port, err := utils.FreePort()
	if err != nil {
		return err
	}
	d.authURL = fmt.Sprintf("https://127.0.0.1:%d", port)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	d.authClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	tokenWebhook, err := testenv.TokenWebhookFlags(d.dir, d.authURL+"/tokenreview", caPEM, "v1", 2*time.Second)
	if err != nil {
		return err
	}
	env, _, err := testenv.Start(testenv.Options{AssetsDir: assets, APIServerFlags: tokenWebhook})
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	d.host, d.caData = env.Config.Host, env.Config.CAData

	admin, err := env.ControlPlane.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	d.kubeconfig = filepath.Join(d.dir, "admin.kubeconfig")
	if err := os.WriteFile(d.kubeconfig, kc, 0o600); err != nil {
		return err
	}
	fmt.Printf("  API server %s; CRDs installed.\n  export KUBECONFIG=%s\n", d.host, d.kubeconfig)

	step("Running the manager (controller + auth server on " + d.authURL + ")")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	manager := exec.CommandContext(ctx, "bin/manager",
		"--webhook-host=127.0.0.1", fmt.Sprintf("--webhook-port=%d", port), "--webhook-cert-path="+certDir,
		"--health-probe-bind-address=127.0.0.1:0", "--metrics-bind-address=0", "--usage-flush-interval=5s",
		"--namespace=default")
	manager.Env = append(os.Environ(), "KUBECONFIG="+d.kubeconfig)
	logFile, err := os.Create(filepath.Join(d.dir, "manager.log"))
	if err != nil {
		return err
	}
	manager.Stdout, manager.Stderr = logFile, logFile
	if err := manager.Start(); err != nil {
		return err
	}
	defer func() { _ = manager.Process.Signal(os.Interrupt); _ = manager.Wait() }()
	fmt.Printf("  manager log: %s\n", logFile.Name())
	authServerUp := func() bool { status, _, _ := d.forwardAuth(""); return status == http.StatusUnauthorized }
	if err := waitFor(30*time.Second, authServerUp); err != nil {
		return fmt.Errorf("the auth server did not come up: %w", err)
	}

	if err := d.transcript(); err != nil {
		return err
	}

	if os.Getenv("DEMO_ONCE") == "1" {
		step("Done (DEMO_ONCE=1)")
		return nil
	}
	step("The control plane stays up; press Ctrl-C to stop")
	fmt.Printf("  export KUBECONFIG=%s\n  kubectl get apikeys -A   (kubectl is %s)\n", d.kubeconfig, d.kubectl)
	<-ctx.Done()
	return nil
}

// transcript applies the sample and shows its key accepted three ways,
// rotated, then suspended.
func (d *demo) transcript() error {
	step("Applying " + sample)
	if err := d.run("kubectl apply -f "+sample, "apply", "-f", sample); err != nil {
		return err
	}
	if err := d.run("kubectl wait --for=condition=Ready apikey/ci-deployer",
		"wait", "--for=condition=Ready", demoKey, "--timeout=30s"); err != nil {
		return err
	}
	if err := d.run("kubectl get apikeys -o wide", "get", "apikeys", "-o", "wide"); err != nil {
		return err
	}
	tok, hint, err := d.token()
	if err != nil {
		return err
	}
	fmt.Printf("\n  TOKEN=$(kubectl get secret ci-deployer-token -o jsonpath='{.data.token}' | base64 -d)"+
		"   # %s (shown once, here only as its hint)\n", hint)

	step("kube-apiserver accepts it: kubectl auth whoami --token=$TOKEN")
	userKubeconfig := filepath.Join(d.dir, "key.kubeconfig")
	if err := os.WriteFile(userKubeconfig, []byte(utils.TokenKubeconfig(d.host, d.caData, tok)), 0o600); err != nil {
		return err
	}
	if err := d.whoami(userKubeconfig, false); err != nil {
		return err
	}

	step("Forward-auth accepts it: GET /auth with Authorization: Bearer $TOKEN")
	status, header, err := d.forwardAuth(tok)
	if err != nil {
		return err
	}
	fmt.Printf("  HTTP %d  X-Auth-Request-User: %s  X-Auth-Request-Scopes: %s\n", status,
		header.Get("X-Auth-Request-User"), header.Get("X-Auth-Request-Scopes"))
	status, _, err = d.forwardAuthQuery(tok, "?scope=admin")
	if err != nil {
		return err
	}
	fmt.Printf("  GET /auth?scope=admin → HTTP %d (the key lacks that scope)\n", status)

	step(`/verify accepts it: POST /verify {"token": "$TOKEN", "scopes": ["images:read"]}`)
	body, err := d.verify(tok)
	if err != nil {
		return err
	}
	fmt.Printf("  %s\n", body)

	if tok, userKubeconfig, err = d.rotation(tok, userKubeconfig); err != nil {
		return err
	}

	step("Suspending it: kubectl patch apikey ci-deployer -p '{\"spec\":{\"suspended\":true}}'")
	if err := d.run("", "patch", demoKey, "--type=merge", "-p", `{"spec":{"suspended":true}}`); err != nil {
		return err
	}
	start := time.Now()
	if err := waitFor(10*time.Second, func() bool { s, _, _ := d.forwardAuth(tok); return s == http.StatusUnauthorized }); err != nil {
		return err
	}
	fmt.Printf("  forward-auth → HTTP 401 after %s\n", time.Since(start).Round(time.Millisecond))
	return d.whoami(userKubeconfig, true)
}

// rotationGrace is how long the demo key's old token keeps working after
// the rotation: long enough to show it accepted, short enough to watch it end.
const rotationGrace = "5s"

// rotation rotates the key with a short grace period and shows the new token
// accepted while the old one still is, then the old one refused. It returns
// the new token and a kubeconfig that carries it.
func (d *demo) rotation(oldTok, oldKubeconfig string) (string, string, error) {
	tok, validUntil, err := d.rotate()
	if err != nil {
		return "", "", err
	}
	until := validUntil.UTC().Format(time.RFC3339)

	step("Both tokens work until " + until)
	newKubeconfig := filepath.Join(d.dir, "rotated-key.kubeconfig")
	if err := os.WriteFile(newKubeconfig, []byte(utils.TokenKubeconfig(d.host, d.caData, tok)), 0o600); err != nil {
		return "", "", err
	}
	if err := d.whoamiLine("$NEW_TOKEN", newKubeconfig, false); err != nil {
		return "", "", err
	}
	if err := d.whoamiLine("$TOKEN    ", oldKubeconfig, false); err != nil {
		return "", "", err
	}
	status, _, err := d.forwardAuth(oldTok)
	if err != nil {
		return "", "", err
	}
	fmt.Printf("  forward-auth with $TOKEN → HTTP %d, %s before its validUntil\n", status, time.Until(validUntil).Round(100*time.Millisecond))

	step("After " + until + " the old token is refused, the new one is not")
	if err := d.oldTokenRefused(oldTok, oldKubeconfig, validUntil); err != nil {
		return "", "", err
	}
	status, _, err = d.forwardAuth(tok)
	if err != nil {
		return "", "", err
	}
	fmt.Printf("  forward-auth with $NEW_TOKEN → HTTP %d\n", status)
	return tok, newKubeconfig, d.whoamiLine("$NEW_TOKEN", newKubeconfig, false)
}

// rotate gives the key a grace period, asks for a rotation through the
// annotation and waits for it; it returns the new token and when the old
// one stops working.
func (d *demo) rotate() (string, time.Time, error) {
	step("Rotating it, the old token kept for a " + rotationGrace + " grace period")
	gracePatch := `{"spec":{"rotation":{"gracePeriod":"` + rotationGrace + `"}}}`
	columns := "custom-columns=TOKEN:.status.tokenHint," +
		"PREVIOUS:.status.previousKeys[*].tokenHint,VALID-UNTIL:.status.previousKeys[*].validUntil"
	if err := d.run("kubectl patch apikey ci-deployer --type=merge -p '"+gracePatch+"'",
		"patch", demoKey, "--type=merge", "-p", gracePatch); err != nil {
		return "", time.Time{}, err
	}
	if err := d.run("kubectl annotate apikey ci-deployer apikeys.dev/rotate=demo-1",
		"annotate", demoKey, "apikeys.dev/rotate=demo-1"); err != nil {
		return "", time.Time{}, err
	}
	if err := d.run("kubectl wait --for=jsonpath='{.status.lastRotateRequest}'=demo-1 apikey/ci-deployer",
		"wait", "--for=jsonpath={.status.lastRotateRequest}=demo-1", demoKey, "--timeout=30s"); err != nil {
		return "", time.Time{}, err
	}
	if err := d.run("kubectl get apikey ci-deployer -o "+columns, "get", demoKey, "-o", columns); err != nil {
		return "", time.Time{}, err
	}
	until, err := d.quiet("get", demoKey, "-o", "jsonpath={.status.previousKeys[0].validUntil}")
	if err != nil {
		return "", time.Time{}, err
	}
	validUntil, err := time.Parse(time.RFC3339, until)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("status.previousKeys[0].validUntil %q: %w", until, err)
	}
	tok, hint, err := d.token()
	if err != nil {
		return "", time.Time{}, err
	}
	fmt.Printf("\n  NEW_TOKEN=$(kubectl get secret ci-deployer-token -o jsonpath='{.data.token}' | base64 -d)"+
		"   # %s, in the same Secret\n", hint)
	return tok, validUntil, nil
}

// oldTokenRefused waits for forward-auth, then kube-apiserver, to refuse the
// superseded token, and shows how long after validUntil each did.
func (d *demo) oldTokenRefused(oldTok, oldKubeconfig string, validUntil time.Time) error {
	if err := waitFor(time.Until(validUntil)+5*time.Second, func() bool {
		s, _, _ := d.forwardAuth(oldTok)
		return s == http.StatusUnauthorized
	}); err != nil {
		return fmt.Errorf("forward-auth still accepts the old token: %w", err)
	}
	fmt.Printf("  forward-auth with $TOKEN → HTTP 401, %s after validUntil\n", time.Since(validUntil).Round(10*time.Millisecond))
	if err := d.whoamiLine("$TOKEN    ", oldKubeconfig, true); err != nil {
		return err
	}
	fmt.Printf("    (%s after validUntil: kube-apiserver keeps a token it has accepted for 10s)\n",
		time.Since(validUntil).Round(100*time.Millisecond))
	return nil
}

// token reads the key's token from its Secret (never shown) and its hint
// from status.
func (d *demo) token() (string, string, error) {
	encoded, err := d.quiet("get", "secret", "ci-deployer-token", "-o", "jsonpath={.data.token}")
	if err != nil {
		return "", "", err
	}
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return "", "", err
	}
	hint, err := d.quiet("get", demoKey, "-o", "jsonpath={.status.tokenHint}")
	return string(raw), hint, err
}

// whoamiLine is whoami on one line: the username and the hint of the token
// kube-apiserver was shown, or kubectl's error.
func (d *demo) whoamiLine(name, kubeconfig string, refused bool) error {
	var out []byte
	err := waitFor(15*time.Second, func() bool {
		var err error
		out, err = exec.Command(d.kubectl, "--kubeconfig", kubeconfig, "auth", "whoami", "-o",
			`jsonpath={.status.userInfo.username} (token {.status.userInfo.extra.apikeys\.dev/token-hint[0]})`).CombinedOutput()
		return (err != nil) == refused
	})
	fmt.Printf("  kubectl auth whoami --token=%s → %s\n", name, strings.TrimSpace(string(out)))
	return err
}

// whoami runs kubectl auth whoami with the key's kubeconfig; with refused,
// it waits (up to the webhook cache TTL and more) for kube-apiserver to refuse.
func (d *demo) whoami(kubeconfig string, refused bool) error {
	var out []byte
	err := waitFor(15*time.Second, func() bool {
		var err error
		out, err = exec.Command(d.kubectl, "--kubeconfig", kubeconfig, "auth", "whoami").CombinedOutput()
		return (err != nil) == refused
	})
	fmt.Print(indent(string(out)))
	return err
}

func (d *demo) forwardAuth(tok string) (int, http.Header, error) { return d.forwardAuthQuery(tok, "") }

func (d *demo) forwardAuthQuery(tok, query string) (int, http.Header, error) {
	req, err := http.NewRequest(http.MethodGet, d.authURL+"/auth"+query, nil)
	if err != nil {
		return 0, nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := d.authClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header, nil
}

func (d *demo) verify(tok string) (string, error) {
	payload, _ := json.Marshal(map[string]any{"token": tok, "scopes": []string{"images:read"}})
	resp, err := d.authClient.Post(d.authURL+"/verify", "application/json", bytes.NewReader(payload))
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body)), err
}

// run shows a kubectl command (as title, if set) and its output.
func (d *demo) run(title string, args ...string) error {
	if title != "" {
		fmt.Printf("  $ %s\n", title)
	}
	out, err := exec.Command(d.kubectl, append([]string{"--kubeconfig", d.kubeconfig}, args...)...).CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		return fmt.Errorf("kubectl %s: %w", args[0], err)
	}
	return nil
}

// quiet runs kubectl without showing its output (it may hold the token).
func (d *demo) quiet(args ...string) (string, error) {
	out, err := exec.Command(d.kubectl, append([]string{"--kubeconfig", d.kubeconfig}, args...)...).Output()
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %w", args[0], err)
	}
	return strings.TrimSpace(string(out)), nil
}

func waitFor(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func step(msg string) { fmt.Printf("\n==> %s\n", msg) }

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}
