package docs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

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

// testedMarker precedes a block that an end-to-end test runs as written:
// `<!-- tested by test/e2e: <name> -->`.
var testedMarker = regexp.MustCompile(`^<!-- tested by test/e2e: (\S+) -->$`)

// TestTestedBlocksAreTested checks the pages' claims that a block is run by
// the end-to-end tests: each marker is followed by a fenced code block, and
// its name is one that a file in test/e2e looks up. (The e2e test fails if a
// block it looks up has lost its marker.)
func TestTestedBlocksAreTested(t *testing.T) {
	e2eFiles, err := filepath.Glob(filepath.Join("..", "e2e", "*.go"))
	if err != nil || len(e2eFiles) == 0 {
		t.Fatalf("no test/e2e sources: %v", err)
	}
	var e2eSource strings.Builder
	for _, f := range e2eFiles {
		e2eSource.WriteString(readFile(t, f))
	}
	found := 0
	for _, page := range markdownPages(t) {
		lines := strings.Split(readFile(t, page), "\n")
		for i, line := range lines {
			m := testedMarker.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			found++
			if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
				t.Errorf("%s:%d: %q is not followed by a fenced code block", page, i+1, line)
			}
			if !strings.Contains(e2eSource.String(), strconv.Quote(m[1])) {
				t.Errorf("%s:%d: no file in test/e2e looks up the block %q", page, i+1, m[1])
			}
		}
	}
	if found == 0 {
		t.Error("no block in docs/ is marked as run by the end-to-end tests; the Caddy and Traefik pages should have some")
	}
}

// markdownLink is an inline link's target: [text](target).
var markdownLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestMarkdownLinks checks every relative link in docs/: the file it names
// exists, and an #anchor into a Markdown page names one of its headings.
// Links with a scheme (https:, mailto:) are not followed.
func TestMarkdownLinks(t *testing.T) {
	anchors := map[string]map[string]bool{}
	headingsOf := func(page string) map[string]bool {
		if a, ok := anchors[page]; ok {
			return a
		}
		a := headingAnchors(proseLines(readFile(t, page)))
		anchors[page] = a
		return a
	}
	for _, page := range markdownPages(t) {
		for n, line := range proseLines(readFile(t, page)) {
			for _, m := range markdownLink.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if u, err := url.Parse(target); err != nil || u.Scheme != "" {
					continue
				}
				path, anchor, _ := strings.Cut(target, "#")
				dest := page
				if path != "" {
					dest = filepath.Join(filepath.Dir(page), path)
					if _, err := os.Stat(dest); err != nil {
						t.Errorf("%s:%d: the link %s names a file that does not exist", page, n+1, target)
						continue
					}
				}
				if anchor != "" && strings.HasSuffix(dest, ".md") && !headingsOf(dest)[anchor] {
					t.Errorf("%s:%d: the link %s names no heading of %s", page, n+1, target, dest)
				}
			}
		}
	}
}

// proseLines returns a page's lines with those inside fenced code blocks
// blanked, so line numbers stay true.
func proseLines(text string) []string {
	lines := strings.Split(text, "\n")
	fence := ""
	for i, line := range lines {
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			fence = trimmed[:3]
			lines[i] = ""
		case fence != "":
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			lines[i] = ""
		}
	}
	return lines
}

// headingAnchors returns the anchors GitHub gives a page's headings:
// lowercase, spaces to hyphens, punctuation dropped, -1, -2… for repeats.
func headingAnchors(lines []string) map[string]bool {
	out := map[string]bool{}
	for _, line := range lines {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var slug strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				slug.WriteRune(r)
			case r == ' ':
				slug.WriteByte('-')
			}
		}
		anchor := slug.String()
		for i := 1; out[anchor]; i++ {
			anchor = fmt.Sprintf("%s-%d", slug.String(), i)
		}
		out[anchor] = true
	}
	return out
}
