package docs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"
)

// codeBlock is one fenced code block of a Markdown page.
type codeBlock struct {
	page string // path of the page
	line int    // line of the opening fence
	info string // the fence's info string, e.g. "yaml"
	text string // the content, with the fence's indentation removed
}

func (b codeBlock) String() string { return fmt.Sprintf("%s:%d", b.page, b.line) }

// markdownPages returns every .md file under docs/.
func markdownPages(t *testing.T) []string {
	t.Helper()
	var pages []string
	err := filepath.WalkDir(docsDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			pages = append(pages, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatalf("no Markdown pages under %s", docsDir)
	}
	return pages
}

// codeBlocks returns the fenced code blocks of page. A fence may be indented
// (inside a list item); its indentation is removed from the content lines,
// as CommonMark does.
func codeBlocks(t *testing.T, page string) []codeBlock {
	t.Helper()
	f, err := os.Open(page)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()

	var (
		blocks  []codeBlock
		current *codeBlock
		indent  int
		fence   string
		content strings.Builder
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if current == nil {
			if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
				indent = len(line) - len(trimmed)
				fence = trimmed[:3]
				current = &codeBlock{page: page, line: n, info: strings.TrimSpace(strings.TrimLeft(trimmed, fence[:1]))}
				content.Reset()
			}
			continue
		}
		if strings.HasPrefix(trimmed, fence) && strings.TrimSpace(strings.TrimLeft(trimmed, fence[:1])) == "" {
			current.text = content.String()
			blocks = append(blocks, *current)
			current = nil
			continue
		}
		for i := 0; i < indent && strings.HasPrefix(line, " "); i++ {
			line = line[1:]
		}
		content.WriteString(line)
		content.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if current != nil {
		t.Fatalf("%s: code block never closed", current)
	}
	return blocks
}

// yamlBlocks returns the ```yaml (or ```yml) blocks of page.
func yamlBlocks(t *testing.T, page string) []codeBlock {
	t.Helper()
	var out []codeBlock
	for _, b := range codeBlocks(t, page) {
		lang, _, _ := strings.Cut(b.info, " ")
		if lang == "yaml" || lang == "yml" {
			out = append(out, b)
		}
	}
	return out
}

// documents splits a YAML block into its documents, decoded. Empty
// documents are dropped; a document that does not parse fails the test.
func (b codeBlock) documents(t *testing.T) []map[string]any {
	t.Helper()
	r := yaml.NewYAMLReader(bufio.NewReader(strings.NewReader(b.text)))
	var docs []map[string]any
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			continue
		}
		var doc map[string]any
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: not valid YAML: %v", b, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// stripComments drops whole-line comments, to tell an empty document from one
// with content.
func stripComments(raw []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}
