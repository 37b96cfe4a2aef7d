// Package memlimit gives the Go runtime the container's memory limit, so
// that the garbage collector works harder as the heap nears it instead of
// letting the kernel kill the process. The Go runtime reads the cgroup's
// CPU limit for GOMAXPROCS, but not its memory limit (GOMEMLIMIT).
package memlimit

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// CgroupRoot is where a container sees its cgroup.
const CgroupRoot = "/sys/fs/cgroup"

// The files under the cgroup root that hold the memory limit: cgroup v2's,
// then v1's.
var limitFiles = []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")}

// unlimitedV1 is where cgroup v1 reports no limit: the largest page-aligned
// int64 (9223372036854771712). Anything from here up is no limit.
const unlimitedV1 = math.MaxInt64 &^ (1<<12 - 1)

// Limit reads the container's memory limit in bytes from the cgroup files
// under root. ok is false when there is none: no such file (not in a
// container, or no memory controller), v2's "max", or v1's unlimited value.
func Limit(root string) (limit int64, ok bool, err error) {
	for _, name := range limitFiles {
		b, err := os.ReadFile(filepath.Join(root, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, err
		}
		text := strings.TrimSpace(string(b))
		if text == "max" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil || n <= 0 {
			return 0, false, fmt.Errorf("%s holds %q, not a memory limit", name, text)
		}
		if n >= unlimitedV1 {
			return 0, false, nil
		}
		return n, true, nil
	}
	return 0, false, nil
}

// Apply sets the runtime's soft memory limit to ratio (from 0 to 1) of the
// container's, read under root, and returns it. It sets nothing and returns
// 0 when ratio is 0, when the GOMEMLIMIT environment variable (read with
// getenv) is set, since the runtime has applied it already, or when the
// container has no limit.
func Apply(root string, ratio float64, getenv func(string) string) (int64, error) {
	if ratio <= 0 || getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	limit, ok, err := Limit(root)
	if err != nil || !ok {
		return 0, err
	}
	set := int64(float64(limit) * ratio)
	debug.SetMemoryLimit(set)
	return set, nil
}
