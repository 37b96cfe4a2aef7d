package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	checkout := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/apikey-operator/apikey-operator", Version: "v0.0.0-20261130025449-224eb41e2e1a+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "224eb41e2e1a0c6f0d4b1f7e8a9c3d2b5e6f7a8b"},
			{Key: "vcs.time", Value: "2026-11-30T02:54:49Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tc := range []struct {
		name                  string
		version, commit, date string
		bi                    *debug.BuildInfo
		want                  Info
	}{
		{
			name:    "ldflags win over the toolchain's record",
			version: "v0.3.0", commit: "0123456789abcdef0123456789abcdef01234567", date: "2026-12-01T00:00:00Z",
			bi: checkout,
			want: Info{Version: "v0.3.0", Commit: "0123456789abcdef0123456789abcdef01234567",
				Date: "2026-12-01T00:00:00Z", GoVersion: "go1.26.8"},
		},
		{
			name: "go build in a checkout: pseudo-version, revision marked dirty, commit time",
			bi:   checkout,
			want: Info{Version: "v0.0.0-20261130025449-224eb41e2e1a+dirty", Commit: "224eb41e2e1a0c6f0d4b1f7e8a9c3d2b5e6f7a8b-dirty",
				Date: "2026-11-30T02:54:49Z", GoVersion: "go1.26.8"},
		},
		{
			name: "go install …@v0.3.0: the module version, no VCS",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.3.0"}},
			want: Info{Version: "v0.3.0", Commit: unknown, Date: unknown, GoVersion: "go1.26.8"},
		},
		{
			name: "(devel) and nothing else says nothing",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			want: Info{Version: unknown, Commit: unknown, Date: unknown, GoVersion: "go1.26.8"},
		},
		{
			name:    "no build info at all",
			version: "v0.3.0",
			want:    Info{Version: "v0.3.0", Commit: unknown, Date: unknown, GoVersion: runtime.Version()},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.Platform = runtime.GOOS + "/" + runtime.GOARCH
			if got := resolve(tc.version, tc.commit, tc.date, tc.bi); got != tc.want {
				t.Errorf("resolve() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestBinariesPrintTheStampedVersion builds the manager and the plugin with
// the -ldflags the Makefile passes and runs their --version: the -X paths
// are right and --version answers before anything else starts (the manager
// gets no kubeconfig and would fail if it tried to connect).
func TestBinariesPrintTheStampedVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries")
	}
	const pkg = "github.com/apikey-operator/apikey-operator/internal/version"
	ldflags := "-X " + pkg + ".Version=v9.8.7 -X " + pkg + ".Commit=0123456789abcdef -X " + pkg + ".Date=2026-12-01T00:00:00Z"
	dir := t.TempDir()
	for _, bin := range []struct {
		name, pkg string
		args      [][]string
	}{
		{name: "manager", pkg: "../../cmd", args: [][]string{{"--version"}}},
		{name: "kubectl-apikey", pkg: "../../cmd/kubectl-apikey", args: [][]string{{"--version"}, {"version"}}},
	} {
		path := filepath.Join(dir, bin.name)
		build := exec.Command("go", "build", "-ldflags", ldflags, "-o", path, bin.pkg)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", bin.pkg, err, out)
		}
		for _, args := range bin.args {
			cmd := exec.Command(path, args...)
			cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(dir, "missing"))
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s %s: %v", bin.name, strings.Join(args, " "), err)
			}
			want := bin.name + " v9.8.7\n  commit: 0123456789abcdef\n  date:   2026-12-01T00:00:00Z\n"
			if !strings.HasPrefix(string(out), want) {
				t.Errorf("%s %s printed\n%s\nwant it to start with\n%s", bin.name, strings.Join(args, " "), out, want)
			}
		}
	}
}
