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
	named := layoutPaths(t, root)
	for name := range named {
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			t.Errorf("the layout table names %s, which is not in the tree", name)
		}
	}
	for _, dir := range goFolders(t, root) {
		if !coveredBy(named, dir) {
			t.Errorf("%s holds Go code the README's layout table does not name", dir)
		}
	}
}

// layoutPaths are the paths in the first column of the README's layout
// table, in backquotes.
func layoutPaths(t *testing.T, root string) map[string]bool {
	t.Helper()
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
			named[strings.TrimSuffix(p[1], "/")] = true
		}
	}
	if len(named) == 0 {
		t.Fatal("the layout table names no paths")
	}
	return named
}

// goFolders are the folders of the tree that hold Go files, relative to
// root, leaving out hidden folders, bin and testdata; a folder that holds a
// single main.go is given as that file.
func goFolders(t *testing.T, root string) []string {
	t.Helper()
	seen := map[string][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			dir := filepath.ToSlash(filepath.Dir(rel))
			seen[dir] = append(seen[dir], d.Name())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dirs := make([]string, 0, len(seen))
	for dir, files := range seen {
		if len(files) == 1 && files[0] == "main.go" {
			dir += "/main.go"
		}
		dirs = append(dirs, dir)
	}
	return dirs
}

// coveredBy reports whether path or a folder above it is named.
func coveredBy(named map[string]bool, path string) bool {
	for p := path; p != "." && p != "/"; p = filepath.ToSlash(filepath.Dir(p)) {
		if named[p] {
			return true
		}
	}
	return false
}
