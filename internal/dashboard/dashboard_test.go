package dashboard

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// The files hold no inline script, no style attribute or element, no
// innerHTML and nothing fetched from elsewhere: the
// Content-Security-Policy would refuse the first ones, and API strings
// must only ever be inserted as text.
func TestNoInlineOrExternal(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:)?//|@import|url\(\s*['"]?https?:`)
	err := fs.WalkDir(files, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, path)
		if err != nil {
			return err
		}
		s := string(b)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage", "sessionStorage", "document.cookie", " style=", ".style."} {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q", path, bad)
			}
		}
		if external.MatchString(s) {
			t.Errorf("%s refers to another origin: %q", path, external.FindString(s))
		}
		if strings.HasSuffix(path, ".html") && (regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(s) || strings.Contains(s, "<style")) {
			t.Errorf("%s has an inline script or style", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
