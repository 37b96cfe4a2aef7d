package utils

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// ControlPlaneDir is where kube-apiserver, etcd and kubectl are: the
// KUBEBUILDER_ASSETS directory when set (make sets it), otherwise the newest
// bin/k8s/<version>-<os>-<arch> that `make envtest` built, found by walking
// up from the working directory, so tests also run from an IDE. It sets
// KUBEBUILDER_ASSETS to what it found, which envtest prefers when set.
func ControlPlaneDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		found, _ := filepath.Glob(filepath.Join(dir, "bin", "k8s", "*", "kube-apiserver"))
		if len(found) > 0 {
			sort.Sort(sort.Reverse(sort.StringSlice(found)))
			assets := filepath.Dir(found[0])
			return assets, os.Setenv("KUBEBUILDER_ASSETS", assets)
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("no test control plane in bin/k8s: run `make envtest` (or `make test`) first")
		}
	}
}

// TokenWebhookKubeconfig is the file kube-apiserver's
// --authentication-token-webhook-config-file reads: the auth server's
// /tokenreview URL and the CA that signed its certificate.
func TokenWebhookKubeconfig(url string, ca []byte) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: apikey-operator
  cluster: {server: %q, certificate-authority-data: %s}
users:
- name: kube-apiserver
contexts:
- name: webhook
  context: {cluster: apikey-operator, user: kube-apiserver}
current-context: webhook
`, url, base64.StdEncoding.EncodeToString(ca))
}

// TokenKubeconfig is a kubeconfig that authenticates to host with token.
// Write it to a 0600 file: it holds a secret.
func TokenKubeconfig(host string, ca []byte, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster: {server: %q, certificate-authority-data: %s}
users:
- name: apikey
  user: {token: %q}
contexts:
- name: apikey
  context: {cluster: cluster, user: apikey, namespace: default}
current-context: apikey
`, host, base64.StdEncoding.EncodeToString(ca), token)
}
