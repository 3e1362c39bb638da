package api_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/api"
)

// docRoute matches a documented route: `METHOD /path` in backquotes.
var docRoute = regexp.MustCompile("`(GET|HEAD|PUT|POST|DELETE) (/[^` ]*)`")

// patternRE turns a ServeMux pattern into a regexp over documented paths,
// which name wildcards their own way ({sha256}, N.ROLE.json, SHA256).
func patternRE(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	rest := p
	for rest != "" {
		i := strings.Index(rest, "{")
		if i < 0 {
			b.WriteString(regexp.QuoteMeta(rest))
			break
		}
		b.WriteString(regexp.QuoteMeta(rest[:i]))
		j := strings.Index(rest, "}")
		if strings.HasSuffix(rest[:j], "...") {
			b.WriteString(".+")
		} else {
			b.WriteString("[^/]+")
		}
		rest = rest[j+1:]
	}
	if strings.HasSuffix(p, "/") {
		b.WriteString(".*") // a subtree
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func readAPIDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every route the server serves is documented in docs/api.md, and every
// route documented there is served.
func TestDocsRoutes(t *testing.T) {
	doc := readAPIDoc(t)
	type documented struct{ method, path string }
	var docs []documented
	for _, m := range docRoute.FindAllStringSubmatch(doc, -1) {
		path, _, _ := strings.Cut(m[2], "?")
		docs = append(docs, documented{m[1], path})
	}
	matches := func(r api.Route, d documented) bool {
		// A route with a more specific pattern wins in ServeMux; here it
		// is enough that the documented path is one the route serves.
		return r.Method == d.method && patternRE(r.Pattern).MatchString(d.path)
	}
	for _, r := range api.Routes {
		if !slices.ContainsFunc(docs, func(d documented) bool { return matches(r, d) }) {
			t.Errorf("route %s is not documented in docs/api.md", r)
		}
	}
	for _, d := range docs {
		if !slices.ContainsFunc(api.Routes, func(r api.Route) bool { return matches(r, d) }) {
			t.Errorf("docs/api.md documents %s %s, which no route serves", d.method, d.path)
		}
	}
}

// Every error code docs/api.md lists (its Errors tables) exists, and every
// code exists in those tables.
func TestDocsErrorCodes(t *testing.T) {
	doc := readAPIDoc(t)
	start := strings.Index(doc, "## Errors")
	end := strings.Index(doc, "### Limits")
	if start < 0 || end < start {
		t.Fatal("docs/api.md has no Errors section before Limits")
	}
	var listed []api.Code
	for _, line := range strings.Split(doc[start:end], "\n") {
		status, codes, ok := strings.Cut(strings.TrimPrefix(line, "| "), " | ")
		if !ok || len(status) != 3 || status[0] < '1' || status[0] > '5' {
			continue
		}
		for _, m := range regexp.MustCompile("`([a-z][a-z0-9-]*)`").FindAllStringSubmatch(codes, -1) {
			listed = append(listed, api.Code(m[1]))
		}
	}
	if len(listed) == 0 {
		t.Fatal("no error codes found in docs/api.md")
	}
	for _, c := range listed {
		if !slices.Contains(api.Codes, c) {
			t.Errorf("docs/api.md lists error code %s, which api does not define", c)
		}
	}
	for _, c := range api.Codes {
		if !slices.Contains(listed, c) {
			t.Errorf("error code %s is not listed in docs/api.md's Errors tables", c)
		}
	}
}
