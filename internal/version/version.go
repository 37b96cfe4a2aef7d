// Package version is what a binary knows about its own build: the version,
// commit and date the build stamped into it with
//
//	-ldflags "-X github.com/apikey-operator/apikey-operator/internal/version.Version=v0.3.0
//	          -X github.com/apikey-operator/apikey-operator/internal/version.Commit=<full sha>
//	          -X github.com/apikey-operator/apikey-operator/internal/version.Date=<RFC 3339>"
//
// or, for whatever the build left unset, what the Go toolchain recorded
// (runtime/debug.ReadBuildInfo: the module version of `go install …@v0.3.0`,
// vcs.revision and vcs.time of a build in a Git checkout).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the build with -ldflags -X; empty means "ask the Go toolchain".
var (
	// Version is the release, e.g. v0.3.0.
	Version string
	// Commit is the Git commit the binary was built from.
	Commit string
	// Date is when that commit was made (or the binary built), RFC 3339.
	Date string
)

// unknown stands for a value neither the build nor the toolchain recorded.
const unknown = "unknown"

// Info describes one binary's build.
type Info struct {
	// Version is the release, or the Go module's pseudo-version for a build
	// from a checkout.
	Version string `json:"version"`
	// Commit is the Git commit, with "-dirty" if the tree had changes.
	Commit string `json:"commit"`
	// Date is the commit's (or the build's) time, RFC 3339.
	Date string `json:"date"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"goVersion"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Get returns this binary's build info: the -ldflags values where set, the
// Go toolchain's record for the rest.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(Version, Commit, Date, bi)
}

// resolve fills what -ldflags left empty from the toolchain's build info bi,
// which may be nil (a binary built without module support).
func resolve(version, commit, date string, bi *debug.BuildInfo) Info {
	info := Info{
		Version:   version,
		Commit:    commit,
		Date:      date,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi != nil {
		fillFromBuildInfo(&info, bi)
	}
	for _, field := range []*string{&info.Version, &info.Commit, &info.Date} {
		if *field == "" {
			*field = unknown
		}
	}
	return info
}

// fillFromBuildInfo sets the empty fields of info from what the toolchain
// recorded: the main module's version ("(devel)" says nothing and is
// skipped), and the VCS revision and commit time.
func fillFromBuildInfo(info *Info, bi *debug.BuildInfo) {
	if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		info.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	var revision, modified, vcsTime string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			vcsTime = s.Value
		}
	}
	if info.Commit == "" && revision != "" {
		info.Commit = revision
		if modified == "true" {
			info.Commit += "-dirty"
		}
	}
	if info.Date == "" {
		info.Date = vcsTime
	}
}

// Text is what `name --version` prints:
//
//	kubectl-apikey v0.3.0
//	  commit: 224eb41…
//	  date:   2026-11-30T02:54:49Z
//	  go:     go1.26.8 linux/amd64
func (i Info) Text(name string) string {
	return fmt.Sprintf("%s %s\n  commit: %s\n  date:   %s\n  go:     %s %s\n",
		name, i.Version, i.Commit, i.Date, i.GoVersion, i.Platform)
}
