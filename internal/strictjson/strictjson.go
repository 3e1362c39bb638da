// Package strictjson owns how Rampart parses JSON that arrives from the
// network: one strict decoder for the whole code base, so that no two
// parts of the system (nor two parsers) can read one document differently.
//
// encoding/json is lenient in ways an attacker can use: for
// {"role":"auditor","role":"admin"} it keeps the last value while other
// parsers keep the first, and it matches member names case-insensitively
// (with Unicode folding), so {"role":"auditor","Role":"admin"} sets the
// field twice. Unmarshal refuses, with a typed *Error naming the member:
//
//   - a member name given twice in one object (KindDuplicate), escaped
//     spellings included;
//   - a member the target type does not have, case variants of a known
//     name included (KindUnknown);
//   - a value the target field cannot hold exactly: a number out of the
//     field's range (a uint64 or int64 counter of 2^64 or more, a negative
//     or fractional number for an integer), bad base64 for []byte, a
//     string for a number (KindValue);
//   - malformed JSON, invalid UTF-8, unpaired surrogates, anything after
//     the value (KindSyntax).
//
// Struct fields are named by their json tag, matched exactly; a field
// without a tag is matched by its exact Go name. Whatever Unmarshal
// accepts, encoding/json decodes to the same value (FuzzUnmarshal checks
// this), so code that still reads a document with encoding/json after it
// was accepted here sees the same content.
//
// The parser is github.com/go-json-experiment/json, the maintained mirror
// of the standard library's encoding/json/v2 (it becomes an alias of the
// standard package once that is no longer experimental).
package strictjson

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Kind says what is wrong with a refused document.
type Kind int

const (
	// KindSyntax: not one well-formed JSON value (in UTF-8).
	KindSyntax Kind = iota + 1
	// KindDuplicate: a member name appears twice in one object.
	KindDuplicate
	// KindUnknown: a member the target has no field for, or a case
	// variant of one it has (see Error.Known).
	KindUnknown
	// KindValue: a value its field cannot hold exactly (wrong type, out
	// of range, bad base64).
	KindValue
)

func (k Kind) String() string {
	switch k {
	case KindSyntax:
		return "syntax"
	case KindDuplicate:
		return "duplicate member"
	case KindUnknown:
		return "unknown member"
	case KindValue:
		return "bad value"
	}
	return "invalid"
}

// Error is a refused document. Its message names the offending member;
// untrusted names in it are quoted and cut to a bounded length, so it can
// be returned to the client as it is.
type Error struct {
	Kind Kind
	// Field is the offending member's path from the top of the document,
	// its names joined with "." (array elements by index): "counter",
	// "roles.acme-gw", "roots.0". Empty for the document as a whole.
	Field string
	// Pointer is the same place as an RFC 6901 JSON Pointer.
	Pointer string
	// Known is, for a case variant of a known member, the known name.
	Known string
	// Offset is the byte offset at or after which the problem was found
	// (0 when unknown).
	Offset int64
	// Detail says more about a syntax or value error.
	Detail string
}

// maxEcho bounds how much of an attacker-chosen name an error repeats.
const maxEcho = 64

func echo(s string) string {
	if len(s) > maxEcho {
		s = s[:maxEcho] + "..."
	}
	return fmt.Sprintf("%q", s)
}

func (e *Error) Error() string {
	switch e.Kind {
	case KindDuplicate:
		return fmt.Sprintf("member %s appears twice; each member may be given once", echo(e.Field))
	case KindUnknown:
		if e.Known != "" {
			return fmt.Sprintf("unknown member %s: member names are case-sensitive, the field is %s", echo(e.Field), echo(e.Known))
		}
		return fmt.Sprintf("unknown member %s", echo(e.Field))
	case KindValue:
		if e.Field == "" {
			return "the document: " + e.Detail
		}
		return fmt.Sprintf("member %s: %s", echo(e.Field), e.Detail)
	}
	if e.Field != "" {
		return fmt.Sprintf("malformed JSON at %s (byte %d): %s", echo(e.Field), e.Offset, e.Detail)
	}
	return fmt.Sprintf("malformed JSON (byte %d): %s", e.Offset, e.Detail)
}

// Unmarshal parses data, which must be exactly one JSON value, into v (a
// non-nil pointer), strictly. A refusal is an *Error. On a refusal v may
// be partly filled: do not use it.
func Unmarshal(data []byte, v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictjson: Unmarshal needs a non-nil pointer, not %T", v)
	}
	err := json.Unmarshal(data, v, json.RejectUnknownMembers(true))
	if err == nil {
		return nil
	}
	return classify(err)
}

func classify(err error) error {
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.As(err, &syn):
		e := &Error{Kind: KindSyntax, Pointer: string(syn.JSONPointer), Field: field(syn.JSONPointer), Offset: syn.ByteOffset}
		if errors.Is(syn.Err, jsontext.ErrDuplicateName) {
			e.Kind = KindDuplicate
		} else {
			e.Detail = strings.TrimPrefix(fmt.Sprint(syn.Err), "jsontext: ")
		}
		return e
	case errors.As(err, &sem):
		e := &Error{Kind: KindValue, Pointer: string(sem.JSONPointer), Field: field(sem.JSONPointer), Offset: sem.ByteOffset}
		if errors.Is(sem.Err, json.ErrUnknownName) {
			e.Kind = KindUnknown
			e.Known = caseVariantOf(sem.GoType, sem.JSONPointer.LastToken())
			return e
		}
		e.Detail = valueDetail(sem)
		return e
	}
	// An I/O error cannot happen on a byte slice; keep it visible.
	return fmt.Errorf("strictjson: %w", err)
}

// valueDetail says why a value does not fit its field, without repeating
// more than a bounded part of it.
func valueDetail(sem *json.SemanticError) string {
	what := "the value"
	switch sem.JSONKind {
	case 'n':
		what = "null"
	case 't', 'f':
		what = "a boolean"
	case '"':
		what = "a string"
	case '0':
		what = "a number"
		if v := string(sem.JSONValue); v != "" {
			what = "number " + truncate(v)
		}
	case '{':
		what = "an object"
	case '[':
		what = "an array"
	}
	why := ""
	switch {
	case sem.Err == nil:
	case strings.Contains(sem.Err.Error(), "out of range") && sem.GoType != nil:
		why = fmt.Sprintf(": out of range (%s)", rangeOf(sem.GoType))
	default:
		why = ": " + truncate(sem.Err.Error())
	}
	return fmt.Sprintf("%s does not fit %s%s", what, typeName(sem.GoType), why)
}

func truncate(s string) string {
	if len(s) > maxEcho {
		return s[:maxEcho] + "..."
	}
	return s
}

func typeName(t reflect.Type) string {
	if t == nil {
		return "this field"
	}
	switch t.Kind() {
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "base64 bytes"
		}
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer field (" + rangeOf(t) + ")"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	}
	return "this field"
}

func rangeOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return fmt.Sprintf("%d to %d", -(int64(1) << (bits - 1)), int64(uint64(1)<<(bits-1)-1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return fmt.Sprintf("0 to %d", uint64(1)<<(t.Bits()-1)*2-1)
	}
	return t.String()
}

// field turns a JSON Pointer into the dotted path an error shows.
func field(p jsontext.Pointer) string {
	var parts []string
	for tok := range p.Tokens() {
		parts = append(parts, tok)
	}
	return strings.Join(parts, ".")
}

// caseVariantOf returns the member name of struct type t that name is a
// case variant of (as encoding/json would have matched it), or "".
func caseVariantOf(t reflect.Type, name string) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return ""
	}
	for _, known := range memberNames(t, 0) {
		if strings.EqualFold(known, name) {
			return known
		}
	}
	return ""
}

// memberNames lists the JSON member names of struct type t, following
// untagged embedded structs as the decoder does.
func memberNames(t reflect.Type, depth int) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if tag == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct && depth < 8 {
			out = append(out, memberNames(ft, depth+1)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}
