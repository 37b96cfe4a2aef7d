package utils

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// WaitForControlPlane waits up to timeout until kube-apiserver, etcd and
// kubectl are in ControlPlaneDir and complete (their sizes stopped
// changing), for a suite that starts while `make envtest` is still building
// them. It never builds anything itself.
func WaitForControlPlane(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		dir, err := ControlPlaneDir()
		if err == nil {
			err = waitStable(deadline, filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "etcd"), filepath.Join(dir, "kubectl"))
			if err == nil {
				return dir, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the test control plane is not complete after %s: %w", timeout, err)
		}
		time.Sleep(2 * time.Second)
	}
}

// FindTool finds a pinned tool: the path in the environment variable env,
// or else the newest bin/<glob> found walking up from the working directory.
// It waits up to timeout for the file to appear and be complete, as a tool
// that `make` is building right now.
func FindTool(env, glob string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		path, err := findTool(env, glob)
		if err == nil {
			if err = waitStable(deadline, path); err == nil {
				return path, nil
			}
		}
		if time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(2 * time.Second)
	}
}

func findTool(env, glob string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		found, _ := filepath.Glob(filepath.Join(dir, "bin", glob))
		if len(found) > 0 {
			sort.Strings(found)
			return found[len(found)-1], nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no bin/%s and %s is not set", glob, env)
		}
	}
}

// waitStable returns once every path exists with a size that has not
// changed for two seconds (go build may copy a binary into place), or an
// error at deadline.
func waitStable(deadline time.Time, paths ...string) error {
	for _, path := range paths {
		var last int64 = -1
		for {
			fi, err := os.Stat(path)
			switch {
			case err == nil && fi.Size() > 0 && fi.Size() == last:
			case time.Now().After(deadline):
				if err == nil {
					err = errors.New("still being written")
				}
				return fmt.Errorf("%s: %w", path, err)
			default:
				if err == nil {
					last = fi.Size()
				}
				time.Sleep(2 * time.Second)
				continue
			}
			break
		}
	}
	return nil
}

// DecodeManifests splits a multi-document YAML stream, such as `kustomize
// build` prints, into objects, skipping empty documents.
func DecodeManifests(manifest []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := utilyaml.ToJSON(doc)
		if err != nil {
			return nil, err
		}
		if js = bytes.TrimSpace(js); len(js) == 0 || string(js) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("decoding a manifest: %w", err)
		}
		objs = append(objs, u)
	}
}
