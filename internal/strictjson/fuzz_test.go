package strictjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/rampartfw/rampart/internal/strictjson"
)

// FuzzUnmarshal checks, for any input, that strict decoding either refuses
// it with a *strictjson.Error naming a kind, or accepts exactly what
// encoding/json (with unknown fields disallowed) reads from it: the two
// parsers never read one accepted document differently. An accepted
// document re-encoded by encoding/json is accepted again.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"name":"a","role":"admin","counter":7,"security_version":3,"roots":["AAE="],"roles":{"acme-gw":"AQ=="},"inner":{"a":1},"list":[{"a":2}],"any":[1,"x",{"k":null}],"Untag":"u","extra":"e"}`,
		`{"role":"auditor","role":"admin"}`,
		`{"role":"auditor","Role":"admin"}`,
		`{"r\u006fle":"admin"}`,
		"{\"\u212aey\":1}",
		`{"counter":18446744073709551616}`,
		`{"security_version":9223372036854775808}`,
		`{"counter":-0}`,
		`{"roots":["AA","AA==\n"]}`,
		`{"name":"\ud83d\ude00","ptr":{"a":1,"b":""}}`,
		`null`,
		`{} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var strict doc
		err := strictjson.Unmarshal(data, &strict)
		if err != nil {
			var se *strictjson.Error
			if !errors.As(err, &se) || se.Kind < strictjson.KindSyntax || se.Kind > strictjson.KindValue {
				t.Fatalf("refusal %v is not a typed *strictjson.Error", err)
			}
			if len(se.Error()) > 400 {
				t.Fatalf("a refusal message of %d bytes", len(se.Error()))
			}
			return
		}
		var lax doc
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&lax); err != nil {
			t.Fatalf("strictjson accepted what encoding/json refuses (%v): %q", err, data)
		}
		if !reflect.DeepEqual(strict, lax) {
			t.Fatalf("the parsers disagree on %q:\nstrict %#v\nencoding/json %#v", data, strict, lax)
		}
		again, err := json.Marshal(strict)
		if err != nil {
			return // e.g. a NaN cannot come from JSON, but stay safe
		}
		if err := strictjson.Unmarshal(again, new(doc)); err != nil {
			t.Fatalf("re-encoded %s: %v", again, err)
		}
	})
}
