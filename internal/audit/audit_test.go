package audit

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func chain(t *testing.T, n int) []Entry {
	t.Helper()
	var out []Entry
	var prev *Entry
	for i := 0; i < n; i++ {
		e, err := Append(prev, Entry{Time: time.Unix(int64(1e9+i), 5).In(time.FixedZone("x", 3600)), Actor: "token:ops", Action: "deploy", Subject: "acme-gw/2.4.1", RequestID: "r" + string(rune('a'+i)), Outcome: "ok", Detail: map[string]string{"b": "2", "a": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		prev = &out[len(out)-1]
	}
	return out
}

func broken(t *testing.T, err error, index int, reason string) {
	t.Helper()
	var be *BrokenError
	if !errors.As(err, &be) || be.Index != index || !strings.Contains(be.Reason, reason) || !errors.Is(err, ErrBroken) {
		t.Fatalf("got %v, want break at %d (%s)", err, index, reason)
	}
}

func TestChain(t *testing.T) {
	es := chain(t, 5)
	if err := Verify(nil, es); err != nil {
		t.Fatal(err)
	}
	if es[0].Prev != Genesis || es[1].Prev != es[0].Hash || es[4].Seq != 5 {
		t.Fatal("not chained")
	}
	// Paged verification.
	if err := Verify(&es[1], es[2:]); err != nil {
		t.Fatal(err)
	}
	// The export format round-trips and still verifies.
	var lines []string
	for _, e := range es {
		b, _ := json.Marshal(e)
		lines = append(lines, string(b))
	}
	var back []Entry
	for _, l := range lines {
		var e Entry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		back = append(back, e)
	}
	if err := Verify(nil, back); err != nil {
		t.Fatal(err)
	}
}

func TestEditedEntry(t *testing.T) {
	for name, edit := range map[string]func(e *Entry){
		"actor":   func(e *Entry) { e.Actor = "token:admin" },
		"outcome": func(e *Entry) { e.Outcome = "denied" },
		"detail":  func(e *Entry) { e.Detail["a"] = "9" },
		"time":    func(e *Entry) { e.Time = e.Time.Add(time.Second) },
	} {
		es := chain(t, 4)
		edit(&es[2])
		broken(t, Verify(nil, es), 2, "edited")
		_ = name
	}
}

func TestDeletedEntry(t *testing.T) {
	es := chain(t, 4)
	es = append(es[:1], es[2:]...)
	broken(t, Verify(nil, es), 1, "deleted")
}

func TestReorderedEntries(t *testing.T) {
	es := chain(t, 4)
	es[1], es[2] = es[2], es[1]
	broken(t, Verify(nil, es), 1, "sequence 3 follows 1")
}

func TestRechainedTailIsCaughtByHead(t *testing.T) {
	es := chain(t, 4)
	head := es[3]
	// An attacker rewrites entry 2 and recomputes every hash after it: the
	// chain verifies, the recorded head does not.
	forged := append([]Entry{}, es[:2]...)
	prev := &forged[1]
	for _, e := range es[2:] {
		e.Outcome = "forged"
		n, err := Append(prev, e)
		if err != nil {
			t.Fatal(err)
		}
		forged = append(forged, n)
		prev = &forged[len(forged)-1]
	}
	if err := Verify(nil, forged); err != nil {
		t.Fatal(err)
	}
	broken(t, VerifyHead(forged, head.Seq, head.Hash), 3, "recorded head")
	if err := VerifyHead(es[:3], head.Seq, head.Hash); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncation not caught: %v", err)
	}
	if err := VerifyHead(es, head.Seq, head.Hash); err != nil {
		t.Fatal(err)
	}
}

func TestGenesisRequired(t *testing.T) {
	es := chain(t, 3)
	broken(t, Verify(nil, es[1:]), 0, "sequence 2 follows 0")
}
