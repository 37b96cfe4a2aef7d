package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Keys of the Secrets besides tls.crt and tls.key.
const (
	// caBundleKey holds, in both Secrets, the CA that signs the serving
	// certificate followed by the CA it replaced while that one is still
	// valid: the bundle callers trust.
	caBundleKey = "ca.crt"
	// caKeyKey holds the private key of the first CA in caBundleKey, in the
	// CA Secret only. A serving Secret written before the CA had a Secret of
	// its own holds it too, until renew replaces that CA.
	caKeyKey = "ca.key"
)

// backdate is how far before issuance a certificate becomes valid, so that a
// peer whose clock runs a little behind accepts it.
const backdate = time.Hour

// lifetimes says how long certificates live and when they are replaced.
type lifetimes struct {
	ca, serving, renewBefore time.Duration
}

// keyPair is a certificate with its private key, parsed and in PEM.
type keyPair struct {
	cert            *x509.Certificate
	key             crypto.Signer
	certPEM, keyPEM []byte
}

// renewal is what renew decided: the data each Secret should hold, the CA
// bundle callers should trust, and when to look again.
type renewal struct {
	// ca and serving are the data of the CA Secret and of the serving
	// Secret; each is nil when that Secret is still good.
	ca, serving map[string][]byte
	caBundle    []byte
	renewAt     time.Time
	// rotatedCA says a new CA was issued.
	rotatedCA bool
}

// renew checks the CA Secret's and the serving Secret's data against hosts
// at now. The CA is replaced when missing, malformed or due for renewal; the
// serving certificate when missing, malformed, due, not covering every host
// or not signed by the current CA. A new CA takes a new serving certificate,
// and the old CA stays in the bundle until it expires, so replicas that still
// serve the old certificate keep being trusted. The serving data never holds
// the CA's key. In the old layout (no CA Secret, ca.key beside tls.key) it
// did, and every pod that serves, the auth-only ones too, could read it and
// sign for any name: that CA is replaced, and not kept in the bundle.
//
//nolint:gocyclo // one decision table: each branch is a state the two Secrets can be in
func renew(caData, servingData map[string][]byte, hosts []string, l lifetimes, now time.Time) (renewal, error) {
	var next renewal
	if exposed := servingData[caKeyKey]; len(exposed) != 0 && (len(caData[caKeyKey]) == 0 || bytes.Equal(exposed, caData[caKeyKey])) {
		caData = nil // the old layout, or its CA moved out by an earlier version that then stopped
	}
	ca, err := parseCA(caData[caBundleKey], caData[caKeyKey])
	bundle := caData[caBundleKey]
	if err != nil || !now.Before(dueAt(ca.cert, l)) {
		previous := ca
		if ca, err = issueCA(now, l); err != nil {
			return renewal{}, err
		}
		bundle = ca.certPEM
		if previous.cert != nil {
			bundle = append(bytes.Clone(bundle), previous.certPEM...)
		}
		next.rotatedCA = true
	}
	if next.rotatedCA {
		next.ca = map[string][]byte{caBundleKey: validCerts(bundle, now), caKeyKey: ca.keyPEM}
	}

	serving, err := parseServing(servingData[corev1.TLSCertKey], servingData[corev1.TLSPrivateKeyKey], ca.cert, hosts, now)
	reissue := next.rotatedCA || err != nil || !now.Before(dueAt(serving.cert, l))
	_, holdsCAKey := servingData[caKeyKey]
	// The bundle callers trust is the CA Secret's, as it is: a certificate
	// someone added to the serving Secret's copy is not trusted.
	if !reissue && !holdsCAKey && bytes.Equal(servingData[caBundleKey], validCerts(bundle, now)) {
		next.caBundle = servingData[caBundleKey]
		next.renewAt = earliest(dueAt(ca.cert, l), dueAt(serving.cert, l))
		return next, nil
	}
	if reissue {
		if serving, err = issueServing(ca, hosts, now, l); err != nil {
			return renewal{}, err
		}
	}
	next.caBundle = validCerts(bundle, now)
	next.serving = map[string][]byte{
		caBundleKey:             next.caBundle,
		corev1.TLSCertKey:       serving.certPEM,
		corev1.TLSPrivateKeyKey: serving.keyPEM,
	}
	next.renewAt = earliest(dueAt(ca.cert, l), dueAt(serving.cert, l))
	return next, nil
}

// dueAt is when cert is replaced: renewBefore ahead of its expiry.
func dueAt(cert *x509.Certificate, l lifetimes) time.Time {
	return cert.NotAfter.Add(-l.renewBefore)
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// parseCA reads the CA that signs: the first certificate of bundle, which
// must be a CA and match keyPEM.
func parseCA(bundle, keyPEM []byte) (keyPair, error) {
	block, _ := pem.Decode(bundle)
	if block == nil || block.Type != "CERTIFICATE" {
		return keyPair{}, errors.New("no CA certificate")
	}
	certPEM := pem.EncodeToMemory(block)
	pair, err := parseKeyPair(certPEM, keyPEM)
	if err != nil {
		return keyPair{}, fmt.Errorf("CA: %w", err)
	}
	if !pair.cert.IsCA {
		return keyPair{}, errors.New("the CA certificate is not a CA")
	}
	return pair, nil
}

// parseServing reads the serving certificate and checks that ca signed it
// for every host and that it is valid at now.
func parseServing(certPEM, keyPEM []byte, ca *x509.Certificate, hosts []string, now time.Time) (keyPair, error) {
	pair, err := parseKeyPair(certPEM, keyPEM)
	if err != nil {
		return keyPair{}, fmt.Errorf("serving certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := pair.cert.Verify(x509.VerifyOptions{
		Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return keyPair{}, fmt.Errorf("serving certificate: %w", err)
	}
	for _, host := range hosts {
		if err := pair.cert.VerifyHostname(host); err != nil {
			return keyPair{}, fmt.Errorf("serving certificate: %w", err)
		}
	}
	return pair, nil
}

func parseKeyPair(certPEM, keyPEM []byte) (keyPair, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return keyPair{}, err
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return keyPair{}, errors.New("the private key cannot sign")
	}
	cert := pair.Leaf
	if cert == nil {
		if cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return keyPair{}, err
		}
	}
	return keyPair{cert: cert, key: key, certPEM: certPEM, keyPEM: keyPEM}, nil
}

// issueCA makes a self-signed CA valid for l.ca from now.
func issueCA(now time.Time, l lifetimes) (keyPair, error) {
	template := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "apikey-operator webhook CA", Organization: []string{"apikey-operator"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(l.ca),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(template, nil)
}

// issueServing makes a serving certificate for hosts signed by ca, valid for
// l.serving from now but never past the CA.
func issueServing(ca keyPair, hosts []string, now time.Time, l lifetimes) (keyPair, error) {
	template := &x509.Certificate{
		NotBefore:   now.Add(-backdate),
		NotAfter:    earliest(now.Add(l.serving), ca.cert.NotAfter),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	// Clients match the names; the common name is for people reading the
	// certificate, and X.509 caps it at 64 characters.
	if len(hosts[0]) <= 64 {
		template.Subject.CommonName = hosts[0]
	}
	for _, host := range hosts {
		if ip := net.ParseIP(host); ip != nil {
			template.IPAddresses = append(template.IPAddresses, ip)
		} else {
			template.DNSNames = append(template.DNSNames, host)
		}
	}
	return sign(template, &ca)
}

// sign makes a new ECDSA P-256 key and a certificate for it from template,
// signed by parent, or by itself when parent is nil.
func sign(template *x509.Certificate, parent *keyPair) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	if template.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return keyPair{}, err
	}
	issuer, signer := template, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, issuer, key.Public(), signer)
	if err != nil {
		return keyPair{}, fmt.Errorf("signing a certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}, nil
}

// validCerts keeps the certificates of bundle that have not expired at now.
func validCerts(bundle []byte, now time.Time) []byte {
	var out []byte
	for rest := bundle; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return out
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !now.Before(cert.NotAfter) {
			continue
		}
		out = append(out, pem.EncodeToMemory(block)...)
	}
}
