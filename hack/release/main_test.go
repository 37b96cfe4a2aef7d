package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// fakeBuilds writes a "binary" per platform under a bin directory.
func fakeBuilds(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	bin := t.TempDir()
	builds := map[string][]byte{
		"linux_amd64/kubectl-apikey":       []byte("linux amd64 build"),
		"darwin_arm64/kubectl-apikey":      []byte("darwin arm64 build"),
		"windows_amd64/kubectl-apikey.exe": []byte("windows amd64 build"),
	}
	for path, data := range builds {
		if err := os.MkdirAll(filepath.Join(bin, filepath.Dir(path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, path), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin, builds
}

// krewPlatform is what the test reads of one platform of the krew manifest.
type krewPlatform struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	URI    string `json:"uri"`
	SHA256 string `json:"sha256"`
	Bin    string `json:"bin"`
}

func TestRelease(t *testing.T) {
	bin, builds := fakeBuilds(t)
	out := t.TempDir()
	if err := run("v1.2.3", bin, out, "https://example.com/dl/"); err != nil {
		t.Fatal(err)
	}

	var manifest struct {
		Spec struct {
			Version   string         `json:"version"`
			Platforms []krewPlatform `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(read(t, filepath.Join(out, "apikey.yaml")), &manifest); err != nil {
		t.Fatalf("apikey.yaml: %v", err)
	}
	if manifest.Spec.Version != "v1.2.3" || len(manifest.Spec.Platforms) != len(builds) {
		t.Fatalf("manifest: version %q, %d platforms; want v1.2.3 and %d", manifest.Spec.Version, len(manifest.Spec.Platforms), len(builds))
	}
	sums := string(read(t, filepath.Join(out, "checksums.txt")))
	for _, p := range manifest.Spec.Platforms {
		checkPlatform(t, out, sums, p, builds)
	}

	again := t.TempDir()
	if err := run("v1.2.3", bin, again, "https://example.com/dl/"); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !bytes.Equal(read(t, filepath.Join(out, f.Name())), read(t, filepath.Join(again, f.Name()))) {
			t.Errorf("%s differs between two runs over the same builds", f.Name())
		}
	}
}

// checkPlatform: p's archive is where its uri says, has the sha256 the
// manifest and checksums.txt give, and holds exactly the build for its
// platform as an executable named as p's bin.
func checkPlatform(t *testing.T, out, sums string, p krewPlatform, builds map[string][]byte) {
	t.Helper()
	osArch := p.Selector.MatchLabels["os"] + "_" + p.Selector.MatchLabels["arch"]
	archive := filepath.Base(p.URI)
	if want := "https://example.com/dl/v1.2.3/" + archive; p.URI != want {
		t.Errorf("%s: uri %s, want %s", osArch, p.URI, want)
	}
	data := read(t, filepath.Join(out, archive))
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != p.SHA256 || !strings.Contains(sums, got+"  "+archive+"\n") {
		t.Errorf("%s: sha256 %s in the manifest, the archive's is %s; checksums.txt:\n%s", osArch, p.SHA256, got, sums)
	}
	name, mode, content := onlyFile(t, archive, data)
	if name != p.Bin || mode&0o111 == 0 || !bytes.Equal(content, builds[osArch+"/"+p.Bin]) {
		t.Errorf("%s: the archive holds %s (mode %o), want the build as executable %s", osArch, name, mode, p.Bin)
	}
}

func TestReleaseRefusesAVersionKrewRefuses(t *testing.T) {
	bin, _ := fakeBuilds(t)
	if err := run("1.2.3", bin, t.TempDir(), "https://example.com"); err == nil {
		t.Error("a version without its v was accepted")
	}
}

// onlyFile returns the single file of a .tar.gz or .zip archive.
func onlyFile(t *testing.T, name string, data []byte) (string, os.FileMode, []byte) {
	t.Helper()
	if strings.HasSuffix(name, ".zip") {
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil || len(zr.File) != 1 {
			t.Fatalf("%s: want a zip of one file: %v", name, err)
		}
		f, err := zr.File[0].Open()
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		return zr.File[0].Name, zr.File[0].Mode(), content
	}
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	tr := tar.NewReader(gz)
	h, err := tr.Next()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	content, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("%s: more than one file", name)
	}
	return h.Name, os.FileMode(h.Mode), content
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
