package logs

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	zapuber "go.uber.org/zap"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/apikey-operator/apikey-operator/test/utils"
)

// canary stands for a token: the tests look for it in what was logged.
const canary = "ak_WireDumpCanary7Qz4mXb9LkP2sVtR8nHc3JdY6fGw1eUoZaQ0"

// maxZapLevel is the highest --zap-log-level that turns every V level on.
// controller-runtime stores the negated value in zap's int8 level, so 128
// becomes -128 while 129 wraps around to +127, which logs nothing at all.
const maxZapLevel = "128"

// newManagerLogger builds the logger cmd/main.go builds from its flags, here
// from --zap-log-level=level, writing to w.
func newManagerLogger(t *testing.T, level string, w io.Writer, extra ...zap.Opts) logr.Logger {
	t.Helper()
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	var opts zap.Options
	opts.BindFlags(fs)
	if err := fs.Parse([]string{"--zap-log-level=" + level}); err != nil {
		t.Fatalf("--zap-log-level=%s: %v", level, err)
	}
	// UseFlagOptions copies every option, so the writer comes after it.
	return zap.New(append([]zap.Opts{zap.UseFlagOptions(&opts), zap.WriteTo(w)}, extra...)...)
}

func TestZapLogLevelFlag(t *testing.T) {
	for _, tc := range []struct {
		level   string
		enabled int // the highest V level that must log
		off     int // a V level that must not, or -1
	}{
		{level: "10", enabled: 10, off: 11},
		{level: "127", enabled: 127, off: -1},
		{level: maxZapLevel, enabled: 127, off: -1},
		// Wraps around to a level above fatal: even V(0) is off.
		{level: "129", enabled: -1, off: 0},
	} {
		t.Run(tc.level, func(t *testing.T) {
			l := newManagerLogger(t, tc.level, io.Discard)
			if tc.enabled >= 0 && !l.V(tc.enabled).Enabled() {
				t.Errorf("--zap-log-level=%s: V(%d) is off", tc.level, tc.enabled)
			}
			if tc.off >= 0 && l.V(tc.off).Enabled() {
				t.Errorf("--zap-log-level=%s: V(%d) is on", tc.level, tc.off)
			}
		})
	}
}

// TestWithoutWireDumps logs at the highest verbosity the entries client-go
// writes when it dumps a request or response, in the shapes
// k8s.io/client-go/rest/request.go and transport/round_trippers.go use, and
// ordinary entries. The unfiltered logger must print the canary of every dump
// (or the test proves nothing); the filtered one none of them, and every
// ordinary entry.
func TestWithoutWireDumps(t *testing.T) {
	dumps := map[string]func(logr.Logger){
		"request body": func(l logr.Logger) {
			l.V(8).WithCallDepth(2).Info("Request Body", "body", canary)
		},
		"response body at V(10)": func(l logr.Logger) {
			l.V(10).WithCallDepth(7).Info("Response Body", "body", canary)
		},
		"body under another message": func(l logr.Logger) { l.V(8).Info("Sent", "body", canary) },
		"body message under another key": func(l logr.Logger) {
			l.V(8).Info("Request Body", "payload", canary)
		},
		"headers": func(l logr.Logger) {
			l.V(8).Info("Response", "verb", "GET", "headers", map[string][]string{"X-Api-Key": {canary}})
		},
		"curl command": func(l logr.Logger) {
			l.V(9).Info("Request", "curlCommand", "curl -v -XGET -H \"X-API-Key: "+canary+"\" 'https://api'")
		},
		"body attached by WithValues": func(l logr.Logger) {
			l.WithValues("body", canary).WithName("client").V(8).Info("Request")
		},
		"error with a body": func(l logr.Logger) {
			l.Error(errors.New("refused"), "Response Body", "body", canary)
		},
	}
	ordinary := map[string]func(logr.Logger){
		"reconcile at V(127)": func(l logr.Logger) {
			l.WithName("apikey").WithValues("apikey", "team-a/ci").V(127).Info("Delivered the token", "secret", "team-a/ci-token")
		},
		"client-go's V(6) response line": func(l logr.Logger) {
			l.V(6).Info("Response", "verb", "POST", "url", "https://api/api/v1/namespaces/team-a/secrets",
				"status", "201 Created", "milliseconds", 3)
		},
		"error": func(l logr.Logger) { l.Error(errors.New("conflict"), "Reconciler error", "apikey", "team-a/ci") },
	}

	for name, log := range dumps {
		t.Run("drops "+name, func(t *testing.T) {
			g := NewWithT(t)
			raw, filtered := &utils.LogBuffer{}, &utils.LogBuffer{}
			log(newManagerLogger(t, maxZapLevel, raw))
			log(WithoutWireDumps(newManagerLogger(t, maxZapLevel, filtered)))
			g.Expect(raw.String()).To(ContainSubstring(canary), "the unfiltered logger must print this dump")
			g.Expect(filtered.String()).To(BeEmpty())
		})
	}
	for name, log := range ordinary {
		t.Run("keeps "+name, func(t *testing.T) {
			g := NewWithT(t)
			raw, filtered := &utils.LogBuffer{}, &utils.LogBuffer{}
			log(newManagerLogger(t, maxZapLevel, raw))
			log(WithoutWireDumps(newManagerLogger(t, maxZapLevel, filtered)))
			g.Expect(filtered.String()).NotTo(BeEmpty())
			g.Expect(withoutTimes(t, filtered.String())).To(Equal(withoutTimes(t, raw.String())), "the filter changed an ordinary entry")
		})
	}
}

// TestWithoutWireDumpsKeepsTheCaller checks that the filter's own frame is
// not reported as the caller, directly and through WithCallDepth as
// client-go's helpers use it.
func TestWithoutWireDumpsKeepsTheCaller(t *testing.T) {
	g := NewWithT(t)
	out := &utils.LogBuffer{}
	l := WithoutWireDumps(newManagerLogger(t, maxZapLevel, out, zap.RawZapOpts(zapuber.AddCaller())))

	_, file, line, _ := runtime.Caller(0)
	l.V(10).Info("direct")
	logFromHelper(l)
	want := []string{shortCaller(file, line+1), shortCaller(file, line+2)}

	logged := entries(t, out.String())
	got := make([]string, 0, len(logged))
	for _, entry := range logged {
		got = append(got, entry["caller"].(string))
	}
	g.Expect(got).To(Equal(want))
}

func logFromHelper(l logr.Logger) { l.WithCallDepth(1).Info("from a helper") }

func shortCaller(file string, line int) string {
	return "logs/" + file[strings.LastIndex(file, "/")+1:] + ":" + strconv.Itoa(line)
}

// TestSetLogger checks that after SetLogger neither controller-runtime's
// loggers nor klog's global one, which client-go falls back to when a
// context carries no logger, print a dump.
func TestSetLogger(t *testing.T) {
	g := NewWithT(t)
	out := &utils.LogBuffer{}
	SetLogger(newManagerLogger(t, maxZapLevel, out))
	t.Cleanup(klog.ClearLogger)

	klog.InfoS("Request Body", "body", canary)
	klog.Background().Info("Response Body", "body", canary)
	ctrl.Log.WithName("setup").V(10).Info("Request Body", "body", canary)
	g.Expect(out.String()).To(BeEmpty())

	klog.InfoS("klog still logs")
	ctrl.Log.WithName("setup").V(10).Info("controller-runtime still logs")
	g.Expect(out.String()).To(SatisfyAll(
		ContainSubstring("klog still logs"),
		ContainSubstring("controller-runtime still logs"),
	))
}

// entries decodes the JSON lines the production encoder wrote.
func entries(t *testing.T, text string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("not a JSON log line: %q: %v", line, err)
		}
		out = append(out, entry)
	}
	return out
}

// withoutTimes re-encodes text's entries without their timestamps and stack
// traces, so that two loggers' output of the same calls, made on different
// lines, compare equal.
func withoutTimes(t *testing.T, text string) string {
	t.Helper()
	var b strings.Builder
	for _, entry := range entries(t, text) {
		delete(entry, "ts")
		delete(entry, "stacktrace")
		line, err := json.Marshal(entry)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}
