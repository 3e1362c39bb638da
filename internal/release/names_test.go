package release

import (
	"regexp"
	"strings"
	"testing"
)

// The grammars of names, as regular expressions: the oracle nameRule.match
// must agree with.
var nameOracles = []struct {
	name string
	rule nameRule
	re   *regexp.Regexp
}{
	{"product", productName, regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)},
	{"file", fileName, regexp.MustCompile(`^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}$`)},
	{"hardware", hardwareName, regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)},
}

func checkNames(t *testing.T, s string) {
	for _, o := range nameOracles {
		if got, want := o.rule.match(s), o.re.MatchString(s); got != want {
			t.Errorf("%s name %q: match %v, the grammar says %v", o.name, s, got, want)
		}
	}
}

func TestNameRules(t *testing.T) {
	for _, s := range []string{
		"", "a", "A", "0", "-", ".", "_", "+", ":", "a-b", "a.b", "a_b", "a+b", "a:b", "-a", ".a", "_a", "+a", ":a",
		"acme-gw", "Acme-GW_rev2", "fw.bin", "fw+1.img", "hw:rev2", "a\n", "a\x00", "é", "aé", "a b",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 128), strings.Repeat("a", 129),
	} {
		checkNames(t, s)
	}
}

func FuzzNameRules(f *testing.F) {
	for _, s := range []string{"acme-gw", "fw.bin", "hw:rev2", "-a", strings.Repeat("z", 128)} {
		f.Add(s)
	}
	f.Fuzz(checkNames)
}
