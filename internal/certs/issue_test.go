package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	testHosts     = []string{"svc.ns.svc", "svc.ns.svc.cluster.local", "127.0.0.1"}
	testLifetimes = lifetimes{ca: 100 * 24 * time.Hour, serving: 10 * 24 * time.Hour, renewBefore: 2 * 24 * time.Hour}
	day           = 24 * time.Hour
)

// secrets is what the CA Secret and the serving Secret hold.
type secrets struct{ ca, serving map[string][]byte }

// after is what the Secrets hold once the issuer has written r.
func (s secrets) after(r renewal) secrets {
	if r.ca != nil {
		s.ca = r.ca
	}
	if r.serving != nil {
		s.serving = r.serving
	}
	return s
}

// oldLayout is s as one Secret, the way the operator kept it before the CA
// had a Secret of its own.
func (s secrets) oldLayout() secrets {
	merged := maps.Clone(s.serving)
	maps.Copy(merged, s.ca)
	return secrets{serving: merged}
}

func TestRenew(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r := mustRenew(t, secrets{}, testHosts, t0)
	if r.ca == nil || r.serving == nil || !r.rotatedCA {
		t.Fatalf("no Secrets must get a CA and a serving certificate")
	}
	first := secrets{}.after(r)
	other := secrets{}.after(mustRenew(t, secrets{}, testHosts, t0))

	tests := []struct {
		name    string
		data    secrets
		hosts   []string
		at      time.Time
		want    string // see checkRenewal
		renewAt time.Time
	}{
		{name: "fresh", data: first, at: t0.Add(day), want: "keep", renewAt: t0.Add(8 * day)},
		{name: "serving certificate due", data: first, at: t0.Add(8 * day), want: "serving", renewAt: t0.Add(16 * day)},
		{name: "a host added", data: first, hosts: append(testHosts, "localhost"), at: t0.Add(day),
			want: "serving", renewAt: t0.Add(9 * day)},
		{name: "serving certificate from another CA",
			data: secrets{first.ca, with(first.serving, corev1.TLSCertKey, other.serving[corev1.TLSCertKey])},
			at:   t0, want: "serving"},
		{name: "serving key lost", data: secrets{first.ca, with(first.serving, corev1.TLSPrivateKeyKey, nil)}, at: t0, want: "serving"},
		{name: "serving Secret lost", data: secrets{ca: first.ca}, at: t0, want: "serving"},
		{name: "CA due", data: first, at: t0.Add(98 * day), want: "new CA", renewAt: t0.Add(106 * day)},
		{name: "CA key of another CA", data: secrets{with(first.ca, caKeyKey, other.ca[caKeyKey]), first.serving}, at: t0, want: "new CA"},
		{name: "CA Secret lost", data: secrets{serving: first.serving}, at: t0, want: "new CA"},
		{name: "garbage", data: secrets{ca: map[string][]byte{caBundleKey: []byte("not PEM"), caKeyKey: []byte("x")}}, at: t0, want: "new CA"},
		// The CA's key sat beside tls.key, where every pod that serves could
		// read it: it is replaced, and dropped from the bundle.
		{name: "old layout", data: first.oldLayout(), at: t0.Add(day), want: "exposed CA", renewAt: t0.Add(9 * day)},
		{name: "old layout, CA due", data: first.oldLayout(), at: t0.Add(98 * day), want: "exposed CA"},
		// An earlier version moved it to the CA Secret and stopped before
		// rewriting the serving Secret.
		{name: "moved, serving Secret not yet rewritten", data: secrets{first.ca, first.oldLayout().serving}, at: t0.Add(day),
			want: "exposed CA"},
		{name: "a CA key in the serving Secret that is not the CA's", data: secrets{first.ca, with(first.serving, caKeyKey, other.ca[caKeyKey])},
			at: t0.Add(day), want: "drop CA key"},
		{name: "serving bundle lacks the CA", data: secrets{first.ca, with(first.serving, caBundleKey, other.ca[caBundleKey])}, at: t0,
			want: "bundle"},
		{name: "serving bundle holds a CA someone added",
			data: secrets{first.ca, with(first.serving, caBundleKey, append(slices.Clone(first.ca[caBundleKey]), other.ca[caBundleKey]...))},
			at:   t0, want: "bundle"},
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
			now := tt.data.after(got)
			if _, ok := now.serving[caKeyKey]; ok {
				t.Fatalf("the serving Secret holds the CA's key")
			}
			if !bytes.Equal(got.caBundle, now.serving[caBundleKey]) {
				t.Fatalf("the bundle to inject is not the serving Secret's")
			}
			assertServes(t, now, hosts, tt.at)
			if again := mustRenew(t, now, hosts, tt.at); again.ca != nil || again.serving != nil {
				t.Fatalf("renewed data is renewed again at once")
			}
		})
	}
}

// checkRenewal checks that got did what want says to data: "keep" both
// Secrets; issue a new "serving" certificate under the same CA; a "new CA"
// and a certificate from it; replace an "exposed CA" (its key was in the
// serving Secret) with a new one, leaving it out of the bundle; "drop CA
// key" or rewrite the "bundle" of a serving Secret, keeping its certificate.
func checkRenewal(t *testing.T, want string, data secrets, got renewal) { //nolint:gocyclo // a flat sequence of checks, each one case
	t.Helper()
	if want == "keep" {
		if got.ca != nil || got.serving != nil {
			t.Fatalf("valid data was replaced")
		}
		return
	}
	if got.serving == nil {
		t.Fatalf("the serving Secret was not rewritten")
	}
	if want == "new CA" || want == "exposed CA" {
		previous := data.ca[caKeyKey]
		if previous == nil {
			previous = data.serving[caKeyKey]
		}
		if !got.rotatedCA || got.ca == nil || bytes.Equal(got.ca[caKeyKey], previous) {
			t.Fatalf("the CA was not replaced")
		}
		if bytes.Equal(got.serving[corev1.TLSCertKey], data.serving[corev1.TLSCertKey]) {
			t.Fatalf("the serving certificate was not replaced")
		}
		if _, hasKey := got.serving[caKeyKey]; hasKey {
			t.Fatalf("the serving Secret still holds a CA key")
		}
		exposed, _ := pem.Decode(data.serving[caBundleKey])
		if want == "exposed CA" && bytes.Contains(got.caBundle, pem.EncodeToMemory(exposed)) {
			t.Fatalf("the CA whose key was in the serving Secret is still trusted")
		}
		return
	}
	if got.rotatedCA {
		t.Fatalf("the CA was replaced")
	}
	if got.ca != nil {
		t.Fatalf("the CA Secret was rewritten")
	}
	reissued := !bytes.Equal(got.serving[corev1.TLSCertKey], data.serving[corev1.TLSCertKey])
	if wantReissued := want == "serving"; reissued != wantReissued {
		t.Fatalf("serving certificate replaced: %t, want %t", reissued, wantReissued)
	}
}

// TestRenewKeepsThePreviousCA checks the overlap that keeps replicas still
// serving a certificate of the old CA trusted until they install the new
// one, and that an expired CA leaves the bundle.
func TestRenewKeepsThePreviousCA(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	first := secrets{}.after(mustRenew(t, secrets{}, testHosts, t0))
	for layout, start := range map[string]secrets{"two Secrets": first} {
		second := start.after(mustRenew(t, start, testHosts, t0.Add(98*day)))
		for name, data := range map[string]map[string][]byte{"CA": second.ca, "serving": second.serving} {
			if n := len(certsIn(t, data[caBundleKey])); n != 2 {
				t.Fatalf("%s: %s Secret's bundle after a CA rotation holds %d certificates, want the new and the old", layout, name, n)
			}
			if !bytes.HasSuffix(data[caBundleKey], first.ca[caBundleKey]) {
				t.Fatalf("%s: %s Secret's bundle: the old CA must follow the new one", layout, name)
			}
		}
		r := mustRenew(t, second, testHosts, t0.Add(106*day))
		if r.serving == nil || r.ca != nil {
			t.Fatalf("%s: the serving certificate is due, the CA is not", layout)
		}
		if n := len(certsIn(t, r.caBundle)); n != 1 {
			t.Fatalf("%s: bundle holds %d certificates after the old CA expired, want 1", layout, n)
		}
	}
}

// TestRenewAfterACrash replays the issuer stopping between its two writes at
// every step of a CA's life: what the next pass finds always chains to a CA
// it holds the key of, and the serving Secret never keeps the CA key.
func TestRenewAfterACrash(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	first := secrets{}.after(mustRenew(t, secrets{}, testHosts, t0))
	for name, start := range map[string]secrets{"old layout": first.oldLayout(), "CA due": first} {
		t.Run(name, func(t *testing.T) {
			at := t0.Add(day)
			if name == "CA due" {
				at = t0.Add(98 * day)
			}
			r := mustRenew(t, start, testHosts, at)
			if r.ca == nil {
				t.Fatalf("the CA Secret is not written")
			}
			crashed := secrets{ca: r.ca, serving: start.serving}
			resumed := crashed.after(mustRenew(t, crashed, testHosts, at))
			if _, ok := resumed.serving[caKeyKey]; ok {
				t.Fatalf("the serving Secret still holds the CA's key")
			}
			if !bytes.Equal(resumed.ca[caKeyKey], r.ca[caKeyKey]) {
				t.Fatalf("the next pass replaced the CA it had just written")
			}
			assertServes(t, resumed, testHosts, at)
		})
	}
}

func TestOptionsKeepTheCAApart(t *testing.T) {
	o := Options{Namespace: "ns", SecretName: "s", Service: "svc", CertDir: t.TempDir(), Issue: true}
	if _, err := o.withDefaults(); err == nil {
		t.Errorf("an issuer without a CA Secret was accepted")
	}
	o.CASecretName = o.SecretName
	if _, err := o.withDefaults(); err == nil {
		t.Errorf("the CA Secret may not be the serving Secret, which every replica reads")
	}
	o.CASecretName, o.Issue = "", false
	if _, err := o.withDefaults(); err != nil {
		t.Errorf("a replica that only reads needs no CA Secret: %v", err)
	}
}

func TestOptionsRefuseEndlessRenewal(t *testing.T) {
	o := Options{Namespace: "ns", SecretName: "s", Service: "svc", CertDir: t.TempDir(), CertValidity: time.Hour, RenewBefore: time.Hour}
	if _, err := o.withDefaults(); err == nil {
		t.Fatalf("renewing as early as the lifetime would renew forever")
	}
}

func mustRenew(t *testing.T, data secrets, hosts []string, at time.Time) renewal {
	t.Helper()
	r, err := renew(data.ca, data.serving, hosts, testLifetimes, at)
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

// assertServes checks the serving certificate chains to the serving
// Secret's bundle for every host, as a TLS client would, and that the CA
// Secret holds the key of the CA that signed it.
func assertServes(t *testing.T, data secrets, hosts []string, at time.Time) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data.serving[caBundleKey]) {
		t.Fatalf("no CA in the bundle")
	}
	serving := certsIn(t, data.serving[corev1.TLSCertKey])[0]
	for _, host := range hosts {
		if _, err := serving.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: at}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	ca, err := parseCA(data.ca[caBundleKey], data.ca[caKeyKey])
	if err != nil {
		t.Fatalf("CA Secret: %v", err)
	}
	if err := serving.CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("the CA Secret's CA did not sign the serving certificate: %v", err)
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

// TestCAWatchKeepsNoKeyMaterial checks that the CA Secret's watch keeps
// nothing a key could be read from: not its data, nor an annotation that
// kubectl apply fills with the whole object.
func TestCAWatchKeepsNoKeyMaterial(t *testing.T) {
	applied := `{"apiVersion":"v1","kind":"Secret","data":{"ca.key":"LS0tLS1CRUdJTi..."}}`
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "ca", Labels: map[string]string{"team": "x"},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": applied}},
		Data: map[string][]byte{caKeyKey: []byte("key")}, StringData: map[string]string{caKeyKey: "key"},
	}
	got, err := withoutData(s)
	if err != nil {
		t.Fatal(err)
	}
	kept := got.(*corev1.Secret)
	if kept.Data != nil || kept.StringData != nil || kept.Annotations != nil || kept.Labels != nil {
		t.Fatalf("the CA watch keeps data, labels or annotations")
	}
}
