package logproof

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateVectors = flag.Bool("update", false, "rewrite testdata/envelope's valid vectors")

// The committed vectors of the log-proof envelope (testdata/envelope):
// valid-*.json parse and marshal back to the same bytes; invalid-*.json
// are refused with ErrMalformed. They pin the format that servers answer
// and offline bundles carry (log-proof.json).
func TestEnvelopeVectors(t *testing.T) {
	dir := filepath.Join("testdata", "envelope")
	if *updateVectors {
		s, _ := newKeys(t, testOrigin)
		cp := signCheckpoint(t, s, testOrigin, 3, make([]byte, 32))
		for name, e := range map[string]Envelope{
			"valid-first-leaf.json": {Statement: mustLeaf(t, testStatement(0)), Proof: &Proof{Index: 0, Checkpoint: cp, Hashes: [][]byte{}}},
			"valid-two-hashes.json": {Statement: mustLeaf(t, testStatement(2)), Proof: &Proof{Index: 2, Checkpoint: cp,
				Hashes: [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}}},
		} {
			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors in %s: %v", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		e, err := ParseEnvelope(b)
		switch {
		case strings.HasPrefix(name, "valid-"):
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if _, err := ParseStatement(e.Statement); err != nil {
				t.Errorf("%s: statement: %v", name, err)
			}
			out, err := e.Marshal()
			if err != nil || !bytes.Equal(out, b) {
				t.Errorf("%s: does not marshal back to itself (%v):\n in %s\nout %s", name, err, b, out)
			}
		case strings.HasPrefix(name, "invalid-"):
			if err == nil || !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: accepted, or refused without ErrMalformed: %v", name, err)
			}
		default:
			t.Errorf("%s: a vector is valid-* or invalid-*", name)
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "envelope", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"statement":"x","proof":{}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEnvelope(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		out, err := e.Marshal()
		if err != nil {
			t.Fatalf("accepted envelope does not marshal: %v", err)
		}
		again, err := ParseEnvelope(out)
		if err != nil {
			t.Fatalf("marshalled envelope does not parse: %v", err)
		}
		if !bytes.Equal(again.Statement, e.Statement) || again.Proof.Index != e.Proof.Index ||
			!bytes.Equal(again.Proof.Checkpoint, e.Proof.Checkpoint) || len(again.Proof.Hashes) != len(e.Proof.Hashes) {
			t.Fatalf("round trip changed the envelope")
		}
	})
}
