package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/apikey-operator/apikey-operator/hack/internal/etcdgw"
	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
	"github.com/apikey-operator/apikey-operator/internal/policy"
	"github.com/apikey-operator/apikey-operator/internal/testenv"
	webhookv1alpha1 "github.com/apikey-operator/apikey-operator/internal/webhook/v1alpha1"
)

var scheme = testenv.Scheme

// managerUserAgent is what bin/manager sends, so the field manager the API
// server records in managedFields is "manager", as in a real cluster.
const managerUserAgent = "manager/v0.0.0 (linux/amd64) kubernetes/$Format"

// env is a running test control plane: kube-apiserver and etcd from
// bin/k8s, with the CRDs, the admission webhooks and the defaults policy
// installed.
type env struct {
	testEnv *envtest.Environment
	cfg     *rest.Config // admin, no client-side rate limit
	client  client.Client
	raw     rest.Interface // for lists timed without decoding, and /debug/pprof
	etcd    *etcdgw.Gateway
	version string // the control plane directory, e.g. 1.37.2-linux-amd64

	apiserverPID, etcdPID int
	// settle is how long to wait after a compaction before reading
	// kube-apiserver's heap.
	settle time.Duration
}

func startEnv(settle time.Duration) (*env, error) {
	testEnv, _, err := testenv.Start(testenv.Options{Webhooks: true})
	if err != nil {
		return nil, err
	}
	e := &env{testEnv: testEnv, version: filepath.Base(testEnv.BinaryAssetsDirectory), settle: settle}
	if err := e.connect(testEnv.Config); err != nil {
		return nil, errors.Join(err, e.testEnv.Stop())
	}
	defaults, err := policy.New(policy.Options{}).DefaultsRule()
	if err == nil {
		err = testenv.InstallDefaults(context.Background(), e.client, defaults, metav1.NamespaceDefault)
	}
	if err != nil {
		return nil, errors.Join(err, e.testEnv.Stop())
	}
	return e, nil
}

// connect builds the clients and finds the two server processes.
func (e *env) connect(cfg *rest.Config) error {
	e.cfg = rest.CopyConfig(cfg)
	e.cfg.QPS, e.cfg.Burst = -1, 0
	var err error
	if e.client, err = client.New(e.cfg, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(e.cfg)
	if err != nil {
		return err
	}
	e.raw = clientset.CoreV1().RESTClient()
	etcdURL := e.testEnv.ControlPlane.Etcd.URL
	e.etcd = etcdgw.New(etcdURL.String(), 5*time.Minute)
	if e.etcdPID, err = pidOf("etcd", etcdURL.Host); err != nil {
		return err
	}
	host, err := url.Parse(cfg.Host)
	if err != nil {
		return err
	}
	e.apiserverPID, err = pidOf("kube-apiserver", "--secure-port="+host.Port())
	return err
}

func (e *env) stop() error { return e.testEnv.Stop() }

// startOperator runs the combined manager as cmd/main.go builds it by
// default: the admission webhooks and the controller, Secrets cached as
// trimmed metadata, managed fields stripped from the cache.
func (e *env) startOperator(ctx context.Context, c config) (*harness.Manager, error) {
	cfg := rest.CopyConfig(e.cfg)
	cfg.UserAgent = managerUserAgent
	wh := &e.testEnv.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ReaderFailOnMissingInformer: true},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: wh.LocalServingHost, Port: wh.LocalServingPort, CertDir: wh.LocalServingCertDir,
		}),
	})
	if err != nil {
		return nil, err
	}
	rules := policy.New(policy.Options{MaxTTL: 365 * 24 * time.Hour})
	if err := harness.SetupController(mgr, rules, c.reconcilers); err != nil {
		return nil, err
	}
	if err := webhookv1alpha1.SetupApiKeyWebhookWithManager(mgr, rules); err != nil {
		return nil, err
	}
	return harness.StartManager(ctx, mgr), nil
}

// pidOf finds the process of the named binary whose command line contains
// needle (the port that tells this control plane from others on the host).
func pidOf(binary, needle string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(cmdline, []byte{0})
		if filepath.Base(string(args[0])) == binary && bytes.Contains(cmdline, []byte(needle)) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process with %q on its command line", binary, needle)
}

// rssBytes is the process's resident set size (VmRSS).
func rssBytes(pid int) (uint64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// saveHeapProfile writes kube-apiserver's heap profile, after a
// collection, to file (for go tool pprof with bin/k8s/*/kube-apiserver).
func (e *env) saveHeapProfile(ctx context.Context, file string) error {
	body, err := e.raw.Get().AbsPath("/debug/pprof/heap").Param("gc", "1").DoRaw(ctx)
	if err != nil {
		return err
	}
	return os.WriteFile(file, body, 0o644)
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat's CPU
// times (100 on Linux).
const clockTicks = 100

// cpuTime is the CPU time (user and system) the process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start at state;
	// utime and stime are fields 14 and 15 of the whole line.
	_, after, ok := strings.Cut(string(stat), ") ")
	fields := strings.Fields(after)
	if !ok || len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// apiserverHeap asks kube-apiserver for a heap profile after a garbage
// collection (gc=1) and returns HeapAlloc from the MemStats at its end: the
// live heap, with what the last collection freed gone.
func (e *env) apiserverHeap(ctx context.Context) (uint64, error) {
	body, err := e.raw.Get().AbsPath("/debug/pprof/heap").Param("gc", "1").Param("debug", "1").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("kube-apiserver's heap profile has no HeapAlloc line")
}
