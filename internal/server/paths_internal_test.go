package server

import "testing"

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
