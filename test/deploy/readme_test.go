package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the values table of dist/chart/README.md from dist/chart/values.yaml")

// The values table sits between these lines of dist/chart/README.md.
const (
	tableBegin = "<!-- values table: go test ./test/deploy -run TestChartREADME -update -->"
	tableEnd   = "<!-- end of values table -->"
)

// valueDoc is one documented key of values.yaml: a "# --" comment above it.
type valueDoc struct {
	key, kind, description string
	value                  any
}

// TestChartREADME: the chart README's values table is values.yaml's, key for
// key: every leaf of values.yaml has a row with its default, every row
// names a key values.yaml has, and the descriptions are the "# --"
// comments. With -update it rewrites the table instead.
func TestChartREADME(t *testing.T) {
	docs := valueDocs(t, readFile(t, "dist/chart/values.yaml"))
	table := valuesTable(docs)
	readme := string(readFile(t, "dist/chart/README.md"))
	begin, end := strings.Index(readme, tableBegin), strings.Index(readme, tableEnd)
	if begin < 0 || end < begin {
		t.Fatalf("dist/chart/README.md has no values table between %q and %q", tableBegin, tableEnd)
	}
	current := readme[begin+len(tableBegin) : end]
	if *update {
		readme = readme[:begin+len(tableBegin)] + "\n" + table + readme[end:]
		must(t, os.WriteFile(filepath.Join(repoRoot, "dist/chart/README.md"), []byte(readme), 0o644))
		return
	}

	rows := tableRows(current)
	byKey := map[string]valueDoc{}
	for _, d := range docs {
		byKey[d.key] = d
		row, ok := rows[d.key]
		switch {
		case !ok:
			t.Errorf("the README's values table has no row for %s", d.key)
		case row != defaultOf(d.value):
			t.Errorf("the README gives %s the default %s, values.yaml %s", d.key, row, defaultOf(d.value))
		}
	}
	for key := range rows {
		if _, ok := byKey[key]; !ok {
			t.Errorf("the README's values table names %s, which values.yaml does not have", key)
		}
	}
	if strings.TrimSpace(current) != strings.TrimSpace(table) {
		t.Error("the README's values table is not values.yaml's: run `go test ./test/deploy -run TestChartREADME -update`")
	}
}

var keyLine = regexp.MustCompile(`^( *)([A-Za-z0-9_]+):`)

// valueDocs reads the documented keys of values.yaml in order, with their
// defaults, and fails unless every leaf (a value that is not a map with
// keys of its own) is documented or under a documented map.
func valueDocs(t *testing.T, valuesYAML []byte) []valueDoc {
	t.Helper()
	var values map[string]any
	must(t, yaml.Unmarshal(valuesYAML, &values))
	reader := &valuesReader{listIndent: -1}
	for line := range strings.SplitSeq(string(valuesYAML), "\n") {
		if key, description, ok := reader.read(line); ok {
			value, found := lookup(values, strings.Split(key, "."))
			if !found {
				t.Fatalf("values.yaml: cannot find %s, read from its comments", key)
			}
			reader.docs = append(reader.docs, newValueDoc(key, description, value))
		}
	}

	documented := map[string]bool{}
	for _, d := range reader.docs {
		documented[d.key] = true
	}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := prefix + k
			if documented[key] {
				continue
			}
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(key+".", sub)
				continue
			}
			t.Errorf("values.yaml: %s has no \"# --\" comment", key)
		}
	}
	walk("", values)
	return reader.docs
}

// valuesReader reads values.yaml a line at a time: the path of keys to the
// current line, and the "# --" comment above it.
type valuesReader struct {
	path        []valuesLevel
	comment     []string
	documenting bool
	// listIndent is the indent of the "- " of the list being read, whose
	// items hold no keys of values.yaml; -1 outside lists.
	listIndent int
	docs       []valueDoc
}

type valuesLevel struct {
	indent int
	key    string
}

// read takes one line; ok when it is a documented key, then with its
// dotted path and its comment.
func (r *valuesReader) read(line string) (key, description string, ok bool) {
	trimmed := strings.TrimSpace(line)
	indent := len(line) - len(strings.TrimLeft(line, " "))
	m := keyLine.FindStringSubmatch(line)
	switch {
	case r.inList(trimmed, indent, m != nil) && !strings.HasPrefix(trimmed, "#"):
	case strings.HasPrefix(trimmed, "# --"):
		r.comment, r.documenting = append(r.comment[:0], strings.TrimSpace(strings.TrimPrefix(trimmed, "# --"))), true
		return "", "", false
	case strings.HasPrefix(trimmed, "#") && r.documenting:
		r.comment = append(r.comment, strings.TrimSpace(strings.TrimPrefix(trimmed, "#")))
		return "", "", false
	case m != nil:
		for len(r.path) > 0 && r.path[len(r.path)-1].indent >= len(m[1]) {
			r.path = r.path[:len(r.path)-1]
		}
		r.path = append(r.path, valuesLevel{len(m[1]), m[2]})
		if r.documenting {
			keys := make([]string, len(r.path))
			for i, l := range r.path {
				keys[i] = l.key
			}
			key, description, ok = strings.Join(keys, "."), strings.Join(r.comment, " "), true
		}
	}
	r.comment, r.documenting = r.comment[:0], false
	return key, description, ok
}

// inList reports whether a line (trimmed, at indent, a key line or not) is
// inside a list's items.
func (r *valuesReader) inList(trimmed string, indent int, isKey bool) bool {
	if strings.HasPrefix(trimmed, "- ") || trimmed == "-" {
		r.listIndent = indent
	} else if isKey && indent <= r.listIndent {
		r.listIndent = -1
	}
	return r.listIndent >= 0
}

func lookup(values map[string]any, keys []string) (any, bool) {
	var v any = values
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// newValueDoc takes the type from a leading "(type)" in the description, as
// helm-docs does, or else from the default.
func newValueDoc(key, description string, value any) valueDoc {
	d := valueDoc{key: key, description: description, value: value}
	if rest, ok := strings.CutPrefix(description, "("); ok {
		if kind, desc, ok := strings.Cut(rest, ")"); ok {
			d.kind, d.description = kind, strings.TrimSpace(desc)
			return d
		}
	}
	switch v := value.(type) {
	case string:
		d.kind = "string"
	case bool:
		d.kind = "bool"
	case float64:
		d.kind = "float"
		if v == float64(int64(v)) {
			d.kind = "int"
		}
	case []any:
		d.kind = "list"
	default:
		d.kind = "object"
	}
	return d
}

// defaultOf is a default as the table shows it: JSON, in backticks.
func defaultOf(value any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(value); err != nil {
		return fmt.Sprintf("`%v`", value)
	}
	return "`" + strings.TrimSpace(b.String()) + "`"
}

// valuesTable renders docs as a Markdown table.
func valuesTable(docs []valueDoc) string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	// Markdown would take "<release>" for an HTML tag, and "|" for a column.
	escape := strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;")
	for _, d := range docs {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n",
			d.key, d.kind, strings.ReplaceAll(defaultOf(d.value), "|", `\|`), escape.Replace(d.description))
	}
	return b.String()
}

var tableRow = regexp.MustCompile("^\\| `([^`]+)` \\| [^|]* \\| (`.*?`) \\| ")

// tableRows maps each key the table names to the default it gives.
func tableRows(table string) map[string]string {
	rows := map[string]string{}
	for line := range strings.SplitSeq(table, "\n") {
		if m := tableRow.FindStringSubmatch(line); m != nil {
			rows[m[1]] = strings.ReplaceAll(m[2], `\|`, "|")
		}
	}
	return rows
}

// TestValuesTableParser feeds the table checks a values file with nested,
// undocumented and list values, so that a parser slip shows here rather
// than as a README that silently drops keys.
func TestValuesTableParser(t *testing.T) {
	docs := valueDocs(t, []byte(`# Not a doc comment.

# -- Top.
# Second line.
top: 1
nested:
  # -- (int or string) Inner.
  inner: ""
  # -- A list.
  list:
  # -- Not this: list items hold no keys of their own.
  - name: a
    # -- Nor this.
    x: 1
# -- A map documented whole.
whole:
  a: b
`))
	got := make([]string, 0, len(docs))
	for _, d := range docs {
		got = append(got, d.key+"|"+d.kind+"|"+defaultOf(d.value)+"|"+d.description)
	}
	sort.Strings(got)
	want := []string{
		"nested.inner|int or string|`\"\"`|Inner.",
		"nested.list|list|`[{\"name\":\"a\",\"x\":1}]`|A list.",
		"top|int|`1`|Top. Second line.",
		"whole|object|`{\"a\":\"b\"}`|A map documented whole.",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
