package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var (
	testHosts     = []string{"svc.ns.svc", "svc.ns.svc.cluster.local", "127.0.0.1"}
	testLifetimes = lifetimes{ca: 100 * 24 * time.Hour, serving: 10 * 24 * time.Hour, renewBefore: 2 * 24 * time.Hour}
	day           = 24 * time.Hour
)

func TestRenew(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	first := mustRenew(t, nil, testHosts, t0)
	if first.data == nil || !first.rotatedCA {
		t.Fatalf("an empty Secret must get a CA and a serving certificate")
	}
	otherCA := mustRenew(t, nil, testHosts, t0).data

	tests := []struct {
		name    string
		data    map[string][]byte
		hosts   []string
		at      time.Time
		want    string // see checkRenewal
		renewAt time.Time
	}{
		{name: "fresh", data: first.data, at: t0.Add(day), want: "keep", renewAt: t0.Add(8 * day)},
		{name: "serving certificate due", data: first.data, at: t0.Add(8 * day), want: "serving", renewAt: t0.Add(16 * day)},
		{name: "a host added", data: first.data, hosts: append(testHosts, "localhost"), at: t0.Add(day),
			want: "serving", renewAt: t0.Add(9 * day)},
		{name: "serving certificate from another CA", data: with(first.data, corev1.TLSCertKey, otherCA[corev1.TLSCertKey]), at: t0,
			want: "serving"},
		{name: "serving key lost", data: with(first.data, corev1.TLSPrivateKeyKey, nil), at: t0, want: "serving"},
		{name: "CA due", data: first.data, at: t0.Add(98 * day), want: "new CA", renewAt: t0.Add(106 * day)},
		{name: "CA key of another CA", data: with(first.data, caKeyKey, otherCA[caKeyKey]), at: t0, want: "new CA"},
		{name: "garbage", data: map[string][]byte{caBundleKey: []byte("not PEM"), caKeyKey: []byte("x")}, at: t0, want: "new CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := tt.hosts
			if hosts == nil {
				hosts = testHosts
			}
			got := mustRenew(t, tt.data, hosts, tt.at)
			if !tt.renewAt.IsZero() && !got.renewAt.Equal(tt.renewAt) {
				t.Errorf("renewAt = %v, want %v", got.renewAt, tt.renewAt)
			}
			checkRenewal(t, tt.want, tt.data, got)
			if got.data == nil {
				return
			}
			assertServes(t, got.data, hosts, tt.at)
			if again := mustRenew(t, got.data, hosts, tt.at); again.data != nil {
				t.Fatalf("renewed data is renewed again at once")
			}
		})
	}
}

// checkRenewal checks that got did what want says to data: "keep" it, issue
// a new "serving" certificate under the same CA, or a "new CA".
func checkRenewal(t *testing.T, want string, data map[string][]byte, got renewal) {
	t.Helper()
	switch want {
	case "keep":
		if got.data != nil {
			t.Fatalf("valid data was replaced")
		}
		return
	case "serving":
		if got.rotatedCA || !bytes.Equal(got.data[caKeyKey], data[caKeyKey]) || !bytes.Equal(got.data[caBundleKey], data[caBundleKey]) {
			t.Fatalf("a serving certificate renewal changed the CA")
		}
	case "new CA":
		if !got.rotatedCA || bytes.Equal(got.data[caKeyKey], data[caKeyKey]) {
			t.Fatalf("the CA was not replaced")
		}
	}
	if bytes.Equal(got.data[corev1.TLSCertKey], data[corev1.TLSCertKey]) {
		t.Fatalf("the serving certificate was not replaced")
	}
}

// TestRenewKeepsThePreviousCA checks the overlap that keeps replicas still
// serving a certificate of the old CA trusted until they install the new
// one, and that an expired CA leaves the bundle.
func TestRenewKeepsThePreviousCA(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	first := mustRenew(t, nil, testHosts, t0)
	second := mustRenew(t, first.data, testHosts, t0.Add(98*day))
	if n := len(certsIn(t, second.data[caBundleKey])); n != 2 {
		t.Fatalf("bundle after a CA rotation holds %d certificates, want the new and the old", n)
	}
	if !bytes.HasSuffix(second.data[caBundleKey], first.data[caBundleKey]) {
		t.Fatalf("the old CA must follow the new one")
	}
	third := mustRenew(t, second.data, testHosts, t0.Add(106*day))
	if third.data == nil || third.rotatedCA {
		t.Fatalf("the serving certificate is due, the CA is not")
	}
	if n := len(certsIn(t, third.data[caBundleKey])); n != 1 {
		t.Fatalf("bundle holds %d certificates after the old CA expired, want 1", n)
	}
}

func TestOptionsRefuseEndlessRenewal(t *testing.T) {
	o := Options{Namespace: "ns", SecretName: "s", Service: "svc", CertDir: t.TempDir(), CertValidity: time.Hour, RenewBefore: time.Hour}
	if _, err := o.withDefaults(); err == nil {
		t.Fatalf("renewing as early as the lifetime would renew forever")
	}
}

func mustRenew(t *testing.T, data map[string][]byte, hosts []string, at time.Time) renewal {
	t.Helper()
	r, err := renew(data, hosts, testLifetimes, at)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func with(data map[string][]byte, key string, value []byte) map[string][]byte {
	out := maps.Clone(data)
	out[key] = value
	return out
}

// assertServes checks the serving certificate chains to the bundle for
// every host, as a TLS client would.
func assertServes(t *testing.T, data map[string][]byte, hosts []string, at time.Time) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data[caBundleKey]) {
		t.Fatalf("no CA in the bundle")
	}
	serving := certsIn(t, data[corev1.TLSCertKey])[0]
	for _, host := range hosts {
		if _, err := serving.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: at}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
}

func certsIn(t *testing.T, bundle []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for block, rest := pem.Decode(bundle); block != nil; block, rest = pem.Decode(rest) {
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
	return certs
}
