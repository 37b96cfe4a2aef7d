package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"testing"
)

// cgroup writes a cgroup root holding file (relative) with content.
func cgroup(t *testing.T, file, content string) string {
	t.Helper()
	root := t.TempDir()
	path := filepath.Join(root, file)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                int64
		ok, fails           bool
	}{
		{"v2", "memory.max", "268435456\n", 268435456, true, false},
		{"v2 without a limit", "memory.max", "max\n", 0, false, false},
		{"v1", "memory/memory.limit_in_bytes", "536870912\n", 536870912, true, false},
		{"v1 without a limit", "memory/memory.limit_in_bytes", strconv.FormatInt(unlimitedV1, 10) + "\n", 0, false, false},
		{"no cgroup files", "cpu.max", "max 100000\n", 0, false, false},
		{"garbage", "memory.max", "lots\n", 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := Limit(cgroup(t, tc.file, tc.content))
			if (err != nil) != tc.fails || got != tc.want || ok != tc.ok {
				t.Errorf("Limit = %d, %v, %v; want %d, %v, error %v", got, ok, err, tc.want, tc.ok, tc.fails)
			}
		})
	}
}

// TestApply sets the runtime's limit to the ratio of the container's,
// unless GOMEMLIMIT is set or the ratio is 0.
func TestApply(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	root := cgroup(t, "memory.max", "1000000000\n")
	noEnv := func(string) string { return "" }

	set, err := Apply(root, 0.9, noEnv)
	if err != nil || set != 900000000 {
		t.Fatalf("Apply = %d, %v; want 900000000", set, err)
	}
	if got := debug.SetMemoryLimit(-1); got != 900000000 {
		t.Errorf("the runtime's limit is %d after Apply, want 900000000", got)
	}

	debug.SetMemoryLimit(before)
	withEnv := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "200MiB"
		}
		return ""
	}
	for name, apply := range map[string]func() (int64, error){
		"GOMEMLIMIT set": func() (int64, error) { return Apply(root, 0.9, withEnv) },
		"ratio 0":        func() (int64, error) { return Apply(root, 0, noEnv) },
	} {
		if set, err := apply(); err != nil || set != 0 {
			t.Errorf("%s: Apply = %d, %v; want 0 and nothing set", name, set, err)
		}
		if got := debug.SetMemoryLimit(-1); got != before {
			t.Errorf("%s: the runtime's limit moved to %d", name, got)
		}
	}
}
