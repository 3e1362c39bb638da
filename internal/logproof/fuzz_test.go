package logproof

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func FuzzParseStatement(f *testing.F) {
	for i := 0; i < 4; i++ {
		f.Add(mustLeaf(f, testStatement(i)))
	}
	s := testStatement(5)
	s.Target = "acme-gw/<ü> & \u2028.img"
	s.SecurityVersion = 1<<64 - 1
	f.Add(mustLeaf(f, s))
	f.Add([]byte(`{"type":"rampart.dev/release-statement/v1"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStatement(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		out, err := MarshalStatement(s)
		if err != nil {
			t.Fatalf("accepted statement does not marshal: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("accepted input is not canonical:\n in %q\nout %q", b, out)
		}
	})
}

func FuzzParseProof(f *testing.F) {
	s, _ := newKeys(f, testOrigin)
	cp := signCheckpoint(f, s, testOrigin, 3, make([]byte, 32))
	for _, p := range []Proof{
		{Index: 0, Checkpoint: cp, Hashes: [][]byte{}},
		{Index: 2, Checkpoint: cp, Hashes: [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}},
	} {
		b, err := p.MarshalJSON()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"index":1,"checkpoint":"a\n1\nAA==\n","hashes":[]}`))
	f.Add([]byte(`{"index":18446744073709551615,"checkpoint":"\u00fc","hashes":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProof(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		out, err := p.MarshalJSON()
		if err != nil {
			t.Fatalf("accepted proof does not marshal: %v", err)
		}
		q, err := ParseProof(out)
		if err != nil {
			t.Fatalf("re-encoded proof refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the proof:\n%+v\n%+v", p, q)
		}
		out2, err := q.MarshalJSON()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("encoding not stable: %v\n%s\n%s", err, out, out2)
		}
		// Verification of arbitrary accepted input must not panic either.
		_, v := newKeys(t, testOrigin)
		if _, err := VerifyInclusion(testOrigin, v, []byte("leaf"), p); err == nil {
			t.Fatal("fuzzed proof verified under a fresh key")
		}
	})
}
