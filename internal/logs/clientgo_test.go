package logs

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/apikey-operator/apikey-operator/test/utils"
)

const testNamespace = "wire-dumps"

// TestClientGoDumpsNoSecret writes a Secret holding the canary through a
// controller-runtime client against a real API server, at the highest
// verbosity, along the two ways client-go finds a logger: the one
// controller-runtime puts into every Reconcile and admission context, and
// klog's global one (here at -v=10, which also turns on client-go's
// debugging round tripper). Each runs twice: unfiltered, client-go must dump
// the Secret (or the test proves nothing); through WithoutWireDumps, the
// canary must appear nowhere, raw, base64 or hex-dumped. Both of
// controller-runtime's encodings are covered: protobuf, which its client
// uses for built-in types and client-go hex-dumps, and JSON.
func TestClientGoDumpsNoSecret(t *testing.T) {
	g := NewWithT(t)
	dir, err := utils.ControlPlaneDir()
	g.Expect(err).NotTo(HaveOccurred())
	testEnv := &envtest.Environment{BinaryAssetsDirectory: dir}
	cfg, err := testEnv.Start()
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { g.Expect(testEnv.Stop()).To(Succeed()) })

	scheme := runtime.NewScheme()
	g.Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(admin.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}})).To(Succeed())

	encodings := map[string]string{"protobuf": "", "json": runtime.ContentTypeJSON}
	loggers := map[string]func(t *testing.T, l logr.Logger) context.Context{
		"context logger": func(t *testing.T, l logr.Logger) context.Context {
			return logf.IntoContext(t.Context(), l)
		},
		"global klog": func(t *testing.T, l logr.Logger) context.Context {
			setKlogVerbosity(t, "10")
			klog.SetLogger(l)
			t.Cleanup(klog.ClearLogger)
			return t.Context()
		},
	}
	for way, install := range loggers {
		for encoding, contentType := range encodings {
			for _, filtered := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/filtered=%t", way, encoding, filtered), func(t *testing.T) {
					g := NewWithT(t)
					out := &utils.LogBuffer{}
					l := newManagerLogger(t, maxZapLevel, out)
					if filtered {
						l = WithoutWireDumps(l)
					}
					ctx := install(t, l)
					// After install: client-go decides on its debugging
					// round tripper from klog's -v when the client is built.
					c := newClient(g, cfg, contentType, scheme)

					secret := &corev1.Secret{
						ObjectMeta: metav1.ObjectMeta{
							Namespace: testNamespace,
							Name:      strings.ReplaceAll(fmt.Sprintf("%s-%s-%t", way, encoding, filtered), " ", "-"),
						},
						Data: map[string][]byte{"token": []byte(canary)},
					}
					g.Expect(c.Create(ctx, secret)).To(Succeed())
					g.Expect(c.Get(ctx, client.ObjectKeyFromObject(secret), &corev1.Secret{})).To(Succeed())
					// client-go's own way to its logger: shows the buffer was live.
					klog.FromContext(ctx).V(10).Info("Client calls done")

					g.Expect(out.String()).To(ContainSubstring("Client calls done"))
					logged := revealDumps(t, out.String())
					leaked := SatisfyAny(ContainSubstring(canary), ContainSubstring(base64.StdEncoding.EncodeToString([]byte(canary))))
					if filtered {
						g.Expect(logged).NotTo(leaked)
						g.Expect(logged).NotTo(Or(ContainSubstring("Request Body"), ContainSubstring("Response Body")))
					} else {
						g.Expect(logged).To(leaked, "client-go did not dump the Secret: the filtered run proves nothing")
					}
				})
			}
		}
	}
}

func newClient(g Gomega, cfg *rest.Config, contentType string, scheme *runtime.Scheme) client.Client {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = contentType
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	return c
}

// setKlogVerbosity sets klog's global -v for the rest of t.
func setKlogVerbosity(t *testing.T, v string) {
	t.Helper()
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	before := fs.Lookup("v").Value.String()
	if err := fs.Set("v", v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fs.Set("v", before) })
}

// revealDumps returns text followed by the bytes of every hex dump client-go
// logged as a body (it hex-dumps protobuf), so that a search finds a token
// that the dump's layout splits across lines.
func revealDumps(t *testing.T, text string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(text)
	for _, entry := range entries(t, text) {
		if body, ok := entry["body"].(string); ok {
			b.WriteByte('\n')
			b.Write(undump(body))
		}
	}
	return b.String()
}

// undump reverses hex.Dump: on each line, the two-digit fields between the
// offset and the |printable| column.
func undump(dump string) []byte {
	var out []byte
	for _, line := range strings.Split(dump, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		for _, field := range fields[1:] {
			if strings.HasPrefix(field, "|") {
				break
			}
			b, err := hex.DecodeString(field)
			if err != nil || len(b) != 1 {
				break
			}
			out = append(out, b...)
		}
	}
	return out
}
