package server

import (
	"path"
	"strings"
	"testing"
)

func TestUnsafePath(t *testing.T) {
	for _, c := range []struct {
		p      string
		rooted bool
		safe   bool
	}{
		{"acme-gw/2.4.1/fw.img", false, true},
		{"acme-gw/2.4.1-rc.1/fw+x_y.img", false, true},
		{"", false, false},
		{"/acme-gw/2.4.1/fw.img", false, false},
		{"acme-gw/2.4.1/fw.img/", false, false},
		{"acme-gw//fw.img", false, false},
		{"acme-gw/../fw.img", false, false},
		{"acme-gw/./fw.img", false, false},
		{"..", false, false},
		{`acme-gw\2.4.1\fw.img`, false, false},
		{"acme-gw/2.4.1/fw\x00.img", false, false},
		{"acme-gw/2.4.1/fw\x7f.img", false, false},
		{"acme-gw/2.4.1/fw\n.img", false, false},
		{"acme-gw/%2e%2e/fw.img", false, false},

		{"/", true, true},
		{"/repo/targets/acme-gw/2.4.1/x.fw.img", true, true},
		{"/log/", true, true},
		{"//", true, false},
		{"///", true, false},
		{"//repo", true, false},
		{"/repo//targets", true, false},
		{"/repo/targets/", true, true},
		{"/repo/..", true, false},
		{"/repo/../", true, false},
		{"/./repo", true, false},
		{"repo", true, false},
		{"/repo/%2e", true, false},
		{"/repo/a\\b", true, false},
		{"/repo/a\x00", true, false},
	} {
		why := unsafePath(c.p, c.rooted)
		if (why == "") != c.safe {
			t.Errorf("unsafePath(%q, %v) = %q, want safe %v", c.p, c.rooted, why, c.safe)
		}
	}
}

// FuzzUnsafePath: request paths and pushed target names are untrusted. A
// path unsafePath accepts is already clean (path.Clean leaves it as it is,
// but for a trailing slash on a URL), has no "." or ".." segment and no
// byte a file system or proxy could read differently.
func FuzzUnsafePath(f *testing.F) {
	for _, s := range []string{"/repo/targets/acme-gw/2.4.1/x.fw.img", "/repo/targets/../x", "/a//b", "acme-gw/1.0.0/fw.img",
		"a/./b", "/%2e%2e/", "a\\b", "a\x00b", "/", "", "/log/tile/0/x001/234"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, p string, rooted bool) {
		if unsafePath(p, rooted) != "" {
			return
		}
		want := p
		if rooted {
			want = strings.TrimSuffix(p, "/")
			if want == "" {
				want = "/"
			}
		}
		if path.Clean(want) != want {
			t.Fatalf("accepted %q, which cleans to %q", p, path.Clean(want))
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("accepted %q with a %q segment", p, seg)
			}
		}
		if strings.ContainsAny(p, "\\%\x00\x7f") {
			t.Fatalf("accepted %q", p)
		}
		if !rooted && (p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/")) {
			t.Fatalf("accepted target name %q", p)
		}
	})
}
