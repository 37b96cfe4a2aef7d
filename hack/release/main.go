// Command release packages the kubectl-apikey plugin that make
// plugin-archives built for each platform: one archive per platform
// (tar.gz, or zip for Windows), their SHA-256 sums in checksums.txt, and a
// krew manifest naming them. Archives are byte-for-byte reproducible: fixed
// times, owners and modes, and no gzip name or time.
//
//	go run ./hack/release -version v0.1.0 -bin dist/plugin/bin -out dist/plugin
//
// -bin holds <os>_<arch>/kubectl-apikey (kubectl-apikey.exe on Windows).
package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"
)

// binary is the plugin's name: kubectl runs `kubectl apikey` as kubectl-apikey.
const binary = "kubectl-apikey"

// archiveTime is the time every archived file carries (zip's epoch), so the
// same binaries always make the same archives.
var archiveTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

//go:embed krew.yaml.tmpl
var krewTemplate string

// platform is one archive: the build of binary for os and arch.
type platform struct {
	OS, Arch string
	Archive  string // file name
	SHA256   string // hex, of the archive
	Bin      string // the binary's name in the archive
}

func main() {
	version := flag.String("version", "", "release version, e.g. v0.1.0")
	binDir := flag.String("bin", "dist/plugin/bin", "directory of <os>_<arch>/ builds")
	out := flag.String("out", "dist/plugin", "where archives, checksums.txt and apikey.yaml go")
	urlBase := flag.String("url-base", "https://github.com/apikey-operator/apikey-operator/releases/download",
		"the archives are downloaded from <url-base>/<version>/<archive>")
	flag.Parse()
	if err := run(*version, *binDir, *out, *urlBase); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(version, binDir, out, urlBase string) error {
	if !strings.HasPrefix(version, "v") {
		return fmt.Errorf("-version %q: krew wants a semantic version starting with v", version)
	}
	builds, err := os.ReadDir(binDir)
	if err != nil {
		return err
	}
	var platforms []platform
	for _, b := range builds {
		goos, arch, ok := strings.Cut(b.Name(), "_")
		if !b.IsDir() || !ok {
			continue
		}
		p, err := pack(filepath.Join(binDir, b.Name()), out, version, goos, arch)
		if err != nil {
			return err
		}
		platforms = append(platforms, p)
		fmt.Printf("%s  %s\n", p.SHA256, p.Archive)
	}
	if len(platforms) == 0 {
		return fmt.Errorf("no <os>_<arch> builds in %s", binDir)
	}
	var sums strings.Builder
	for _, p := range platforms {
		fmt.Fprintf(&sums, "%s  %s\n", p.SHA256, p.Archive)
	}
	if err := os.WriteFile(filepath.Join(out, "checksums.txt"), []byte(sums.String()), 0o644); err != nil {
		return err
	}
	manifest, err := krewManifest(version, strings.TrimSuffix(urlBase, "/")+"/"+version, platforms)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "apikey.yaml"), manifest, 0o644)
}

// pack archives the binary in dir for goos/arch into out.
func pack(dir, out, version, goos, arch string) (platform, error) {
	p := platform{OS: goos, Arch: arch, Bin: binary}
	if goos == "windows" {
		p.Bin += ".exe"
	}
	data, err := os.ReadFile(filepath.Join(dir, p.Bin))
	if err != nil {
		return p, err
	}
	var archive []byte
	if goos == "windows" {
		p.Archive = fmt.Sprintf("%s_%s_%s_%s.zip", binary, version, goos, arch)
		archive, err = zipOf(p.Bin, data)
	} else {
		p.Archive = fmt.Sprintf("%s_%s_%s_%s.tar.gz", binary, version, goos, arch)
		archive, err = tarGzOf(p.Bin, data)
	}
	if err != nil {
		return p, err
	}
	sum := sha256.Sum256(archive)
	p.SHA256 = hex.EncodeToString(sum[:])
	return p, os.WriteFile(filepath.Join(out, p.Archive), archive, 0o644)
}

func tarGzOf(name string, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{
		Name: name, Mode: 0o755, Size: int64(len(data)), ModTime: archiveTime, Typeflag: tar.TypeReg, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func zipOf(name string, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: archiveTime}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// krewManifest is the plugin's krew manifest, platforms sorted by os and arch.
func krewManifest(version, url string, platforms []platform) ([]byte, error) {
	slices.SortFunc(platforms, func(a, b platform) int { return strings.Compare(a.OS+"/"+a.Arch, b.OS+"/"+b.Arch) })
	tmpl, err := template.New("krew").Parse(krewTemplate)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, struct {
		Version, URL string
		Platforms    []platform
	}{version, url, platforms})
	return buf.Bytes(), err
}
