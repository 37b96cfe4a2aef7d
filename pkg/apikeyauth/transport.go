package apikeyauth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// maxIdleConns is how many idle connections to the auth server a Client
// keeps, so that a busy service does not pay a TLS handshake per request.
const maxIdleConns = 64

// newHTTPClient returns a client trusting roots (nil: the system roots)
// that never follows a redirect: a redirected POST would carry the token
// elsewhere.
func newHTTPClient(roots *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	t.MaxIdleConnsPerHost = maxIdleConns
	return &http.Client{Transport: t, CheckRedirect: refuseRedirects}
}

func refuseRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// caTrust holds an HTTP client trusting the certificates of a CA file and
// replaces it when the file changes: cert-manager renews the webhook
// certificate, and with a self-signed issuer that renews the CA too.
type caTrust struct {
	file string

	mu      sync.Mutex
	stamp   fileStamp // of the file as last read
	current *http.Client
}

// fileStamp tells one version of a file from another without reading it.
// Kubernetes updates a mounted Secret or ConfigMap by swapping a symlink,
// which os.Stat follows, so the new version has a new stamp.
type fileStamp struct {
	modTime time.Time
	size    int64
}

func newCATrust(file string) (*caTrust, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("apikeyauth: CAFile: %w", err)
	}
	roots, err := readCertPool(file)
	if err != nil {
		return nil, err
	}
	return &caTrust{file: file, stamp: stampOf(fi), current: newHTTPClient(roots)}, nil
}

// client returns the HTTP client for the file as it is now. A file that
// cannot be read or holds no certificate leaves the previous trust in place.
func (t *caTrust) client() *http.Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	fi, err := os.Stat(t.file)
	if err != nil || stampOf(fi) == t.stamp {
		return t.current
	}
	t.stamp = stampOf(fi)
	roots, err := readCertPool(t.file)
	if err != nil {
		return t.current
	}
	previous := t.current
	t.current = newHTTPClient(roots)
	previous.CloseIdleConnections()
	return t.current
}

func stampOf(fi os.FileInfo) fileStamp { return fileStamp{modTime: fi.ModTime(), size: fi.Size()} }

func readCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("apikeyauth: CAFile: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("apikeyauth: CAFile %s holds no PEM certificate", file)
	}
	return roots, nil
}
