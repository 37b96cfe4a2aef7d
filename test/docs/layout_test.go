package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeLayout keeps the README's layout table true to the tree: every
// path it names exists, and every folder that holds Go code is named, by
// itself or by a folder above it.
func TestReadmeLayout(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n## Layout\n")
	if !ok {
		t.Fatal("README.md has no ## Layout section")
	}
	table, _, _ = strings.Cut(table, "\n## ")

	named := map[string]bool{}
	firstCell := regexp.MustCompile(`(?m)^\| ([^|]+) \|`)
	path := regexp.MustCompile("`([^`]+)`")
	for _, cell := range firstCell.FindAllStringSubmatch(table, -1) {
		for _, p := range path.FindAllStringSubmatch(cell[1], -1) {
			name := strings.TrimSuffix(p[1], "/")
			named[name] = true
			if _, err := os.Stat(filepath.Join(root, name)); err != nil {
				t.Errorf("the layout table names %s, which is not in the tree", name)
			}
		}
	}
	if len(named) == 0 {
		t.Fatal("the layout table names no paths")
	}

	covered := func(dir string) bool {
		for d := dir; d != "."; d = filepath.Dir(d) {
			if named[filepath.ToSlash(d)] {
				return true
			}
		}
		return false
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && rel != "." || d.Name() == "bin" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && !covered(filepath.Dir(rel)) && !named[filepath.ToSlash(rel)] {
			t.Errorf("%s holds Go code the README's layout table does not name", filepath.Dir(rel))
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
