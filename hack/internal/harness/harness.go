// Package harness is what the programs under hack/ that drive a test
// control plane share: logs sent to a file, progress on the terminal,
// managers run in the background, polling, the module root, the live heap.
package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/apikey-operator/apikey-operator/internal/controller"
	"github.com/apikey-operator/apikey-operator/internal/policy"

	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// OpenLogs sends controller-runtime's and client-go's logs, at info level,
// to the file named file, or to a new temporary file named after pattern
// (os.CreateTemp) if file is empty, so the terminal shows only progress.
func OpenLogs(file, pattern string) (*os.File, error) {
	var f *os.File
	var err error
	if file == "" {
		f, err = os.CreateTemp("", pattern)
	} else {
		f, err = os.Create(file)
	}
	if err != nil {
		return nil, err
	}
	logger := zap.New(zap.WriteTo(f), zap.Level(zapcore.InfoLevel))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
	return f, nil
}

// Progress prints a timestamped line to stderr.
func Progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Manager is a controller-runtime manager started in the background.
type Manager struct {
	cancel context.CancelFunc
	done   chan error
}

// StartManager starts mgr in the background.
func StartManager(ctx context.Context, mgr ctrl.Manager) *Manager {
	ctx, cancel := context.WithCancel(ctx)
	m := &Manager{cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- mgr.Start(ctx) }()
	return m
}

// Done receives the manager's error if it stops on its own.
func (m *Manager) Done() <-chan error { return m.done }

// Stopped returns the manager's error if it has stopped on its own, and
// nil while it runs.
func (m *Manager) Stopped() error {
	select {
	case err := <-m.done:
		return fmt.Errorf("manager stopped: %w", err)
	default:
		return nil
	}
}

// Stop cancels the manager and waits until it has returned, so its caches
// can be collected.
func (m *Manager) Stop() error {
	m.cancel()
	select {
	case err := <-m.done:
		return err
	case <-time.After(2 * time.Minute):
		return errors.New("manager did not stop within 2 minutes")
	}
}

// PollUntil calls cond every interval until it returns true or an error,
// for at most timeout.
func PollUntil(ctx context.Context, interval, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met within %s", timeout)
		case <-tick.C:
		}
	}
}

// ModuleRoot is the directory of the main module's go.mod.
func ModuleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return path.Dir(gomod)
	}
	wd, _ := os.Getwd()
	return wd
}

// PeakLiveHeap samples, every 50 ms until stop is called, the live heap
// as the last GC marked it (runtime/metrics' /gc/heap/live:bytes, read
// without stopping the world); stop returns the largest value seen. With a
// profile path, it writes a heap profile there whenever the live heap has
// grown by a tenth over the last one written, so the file ends up showing
// what was live near the peak (as of the GC that marked it).
func PeakLiveHeap(profile string) (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	done, peak := make(chan struct{}), make(chan uint64)
	go func() {
		most := read()
		profiled := most
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				peak <- max(most, read())
				return
			case <-t.C:
				most = max(most, read())
				if profile != "" && most > profiled+profiled/10 {
					profiled = most
					if err := WriteHeapProfile(profile); err != nil {
						Progress("  could not write the peak heap profile: %v", err)
						profile = ""
					}
				}
			}
		}
	}()
	return func() uint64 {
		close(done)
		return <-peak
	}
}

// WriteHeapProfile writes the heap profile (as of the last GC) to file.
func WriteHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	return errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
}

// LiveHeap is this process's heap in use after two full collections.
func LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// SetupController adds the ApiKey controller to mgr as cmd/main.go does,
// with the given rules and workers (0: the controller's default).
func SetupController(mgr ctrl.Manager, rules *policy.Policy, workers int) error {
	return (&controller.ApiKeyReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Recorder:                mgr.GetEventRecorder("apikey-operator"),
		Policy:                  rules,
		MaxConcurrentReconciles: workers,
	}).SetupWithManager(mgr)
}
