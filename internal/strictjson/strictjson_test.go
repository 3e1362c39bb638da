package strictjson_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/strictjson"
)

type inner struct {
	A int    `json:"a"`
	B string `json:"b,omitempty"`
}

type Embedded struct {
	Extra string `json:"extra,omitempty"`
}

// doc has the shapes network requests use.
type doc struct {
	Embedded
	Name    string            `json:"name"`
	Role    string            `json:"role"`
	Counter uint64            `json:"counter"`
	Signed  int64             `json:"security_version,omitempty"`
	Small   int32             `json:"small,omitempty"`
	Ok      bool              `json:"ok,omitempty"`
	Ratio   float64           `json:"ratio,omitempty"`
	Roots   [][]byte          `json:"roots,omitempty"`
	Roles   map[string][]byte `json:"roles,omitempty"`
	Inner   inner             `json:"inner"`
	Ptr     *inner            `json:"ptr,omitempty"`
	List    []inner           `json:"list,omitempty"`
	Any     any               `json:"any,omitempty"`
	Untag   string
}

func TestRefusals(t *testing.T) {
	for _, c := range []struct {
		in    string
		kind  strictjson.Kind
		field string
		known string
		msg   string
	}{
		{`{"role":"auditor","role":"admin"}`, strictjson.KindDuplicate, "role", "", `member "role" appears twice`},
		{`{"role":"auditor","r\u006fle":"admin"}`, strictjson.KindDuplicate, "role", "", `appears twice`},
		{`{"role":"auditor","Role":"admin"}`, strictjson.KindUnknown, "Role", "role", `case-sensitive, the field is "role"`},
		{`{"ROLE":"admin"}`, strictjson.KindUnknown, "ROLE", "role", `"ROLE"`},
		// U+212A KELVIN SIGN and U+017F LATIN SMALL LETTER LONG S fold to
		// k and s in encoding/json's matching.
		{"{\"\u212aind\":1,\"name\":\"x\"}", strictjson.KindUnknown, "\u212aind", "", "unknown member"},
		{"{\"role\u017f\":1}", strictjson.KindUnknown, "role\u017f", "roles", `the field is "roles"`},
		{`{"bogus":1}`, strictjson.KindUnknown, "bogus", "", `unknown member "bogus"`},
		{`{"untag":"x"}`, strictjson.KindUnknown, "untag", "Untag", `the field is "Untag"`},
		{`{"EXTRA":"x"}`, strictjson.KindUnknown, "EXTRA", "extra", `the field is "extra"`},
		{`{"inner":{"a":1,"A":2}}`, strictjson.KindUnknown, "inner.A", "a", `"inner.A"`},
		{`{"inner":{"a":1,"a":2}}`, strictjson.KindDuplicate, "inner.a", "", `"inner.a" appears twice`},
		{`{"roles":{"x":"AA==","x":"AQ=="}}`, strictjson.KindDuplicate, "roles.x", "", `"roles.x"`},
		{`{"list":[{"a":1},{"b":"x","b":"y"}]}`, strictjson.KindDuplicate, "list.1.b", "", `"list.1.b"`},
		{`{"any":{"k":1,"k":2}}`, strictjson.KindDuplicate, "any.k", "", `"any.k"`},
		{`{"counter":18446744073709551616}`, strictjson.KindValue, "counter", "", `member "counter": number 18446744073709551616 does not fit an integer field (0 to 18446744073709551615): out of range`},
		{`{"security_version":9223372036854775808}`, strictjson.KindValue, "security_version", "", `member "security_version": number 9223372036854775808 does not fit an integer field (-9223372036854775808 to 9223372036854775807)`},
		{`{"small":2147483648}`, strictjson.KindValue, "small", "", `out of range`},
		{`{"counter":-1}`, strictjson.KindValue, "counter", "", `member "counter": number -1`},
		{`{"counter":1.5}`, strictjson.KindValue, "counter", "", `number 1.5`},
		{`{"counter":1e3}`, strictjson.KindValue, "counter", "", `number 1e3`},
		{`{"counter":"7"}`, strictjson.KindValue, "counter", "", `member "counter"`},
		{`{"ratio":1e999}`, strictjson.KindValue, "ratio", "", `member "ratio"`},
		{`{"roots":["!!"]}`, strictjson.KindValue, "roots.0", "", `member "roots.0"`},
		{`{"ok":"true"}`, strictjson.KindValue, "ok", "", `member "ok"`},
		{`[]`, strictjson.KindValue, "", "", `the document`},
		{`{"name":"x"} {}`, strictjson.KindSyntax, "", "", `malformed JSON`},
		{`{"name":"x"`, strictjson.KindSyntax, "", "", `malformed JSON`},
		{``, strictjson.KindSyntax, "", "", `malformed JSON`},
		{"{\"name\":\"\xff\"}", strictjson.KindSyntax, "name", "", `malformed JSON at "name"`},
		{`{"name":"\ud800"}`, strictjson.KindSyntax, "name", "", `surrogate`},
		{`{"name":'x'}`, strictjson.KindSyntax, "name", "", `malformed JSON`},
		{`{"any":` + strings.Repeat("[", 20000), strictjson.KindSyntax, "any" + strings.Repeat(".0", 9999), "", `exceeded max depth`},
		{strings.Repeat("[", 20), strictjson.KindValue, "", "", `the document: an array does not fit an object`},
	} {
		var d doc
		err := strictjson.Unmarshal([]byte(c.in), &d)
		var se *strictjson.Error
		if !errors.As(err, &se) {
			t.Errorf("%.60s: %v, want a *strictjson.Error", c.in, err)
			continue
		}
		if se.Kind != c.kind || se.Field != c.field || se.Known != c.known || !strings.Contains(se.Error(), c.msg) {
			t.Errorf("%.60s: %v (kind %v field %q known %q), want kind %v field %q known %q and %q",
				c.in, se, se.Kind, se.Field, se.Known, c.kind, c.field, c.known, c.msg)
		}
	}
}

// What strict decoding accepts decodes as encoding/json decodes it.
func TestAccepted(t *testing.T) {
	in := `{"name":"a","role":"admin","counter":18446744073709551615,"security_version":-9223372036854775808,
		"roots":["AAE=",""],"roles":{"acme-gw":"AQ==","ACME-GW":null},"inner":{"a":1},"ptr":null,
		"list":[{"a":2,"b":"\u00e9"}],"any":{"x":[1,"s",null,true]},"Untag":"u","extra":"e"}`
	var got, want doc
	if err := strictjson.Unmarshal([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(in), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("strict %+v\nencoding/json %+v", got, want)
	}
	var z doc
	if err := strictjson.Unmarshal([]byte(`null`), &z); err != nil || !reflect.DeepEqual(z, doc{}) {
		t.Fatalf("null: %v %+v", err, z)
	}
}

// A long attacker-chosen name is not repeated in full.
func TestErrorsAreBounded(t *testing.T) {
	name := strings.Repeat("x", 1<<20)
	err := strictjson.Unmarshal([]byte(`{"`+name+`":1}`), &doc{})
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("error of %d bytes", len(err.Error()))
	}
	err = strictjson.Unmarshal([]byte(`{"counter":1`+strings.Repeat("0", 1<<20)+`}`), &doc{})
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("error of %d bytes", len(err.Error()))
	}
}

func TestNotAPointer(t *testing.T) {
	var d doc
	err := strictjson.Unmarshal([]byte(`{}`), d)
	var se *strictjson.Error
	if err == nil || errors.As(err, &se) {
		t.Fatalf("%v: a programming error is not the document's", err)
	}
}
