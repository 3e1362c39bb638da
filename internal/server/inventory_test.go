package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/rampartfw/rampart/internal/api"
	"github.com/rampartfw/rampart/internal/store"
)

// The inventory: tags, a device listing by CEL selector in bounded
// pages, and the release listing from the published metadata and the log.
func TestInventory(t *testing.T) {
	e := newTLSEnv(t)
	ctx := context.Background()
	st := e.inst.Store
	for i := range 30 {
		hw := "acme-gw-rev2"
		if i%3 == 0 {
			hw = "acme-gw-rev1"
		}
		if err := st.CreateDevice(ctx, store.Device{ID: fmt.Sprintf("gw-%03d", i), HardwareID: hw, CertSerial: fmt.Sprint(i + 100), EnrolledAt: e.now}); err != nil {
			t.Fatal(err)
		}
	}
	tag := func(id string, req api.TagsRequest) map[string]string {
		var out api.Tags
		json.Unmarshal(e.mustCall(e.pool, "POST", "/api/v1/devices/"+id+"/tags", e.admin, req, 200), &out)
		return out.Tags
	}
	for i := range 10 {
		tag(fmt.Sprintf("gw-%03d", i), api.TagsRequest{Set: map[string]string{"site": "lab"}})
	}
	if got := tag("gw-001", api.TagsRequest{Set: map[string]string{"risk": "high"}}); got["site"] != "lab" || got["risk"] != "high" {
		t.Fatalf("tags %v", got)
	}
	list := func(sel string, after string, limit int) api.DeviceList {
		t.Helper()
		q := url.Values{"select": {sel}}
		if after != "" {
			q.Set("after", after)
		}
		if limit > 0 {
			q.Set("limit", fmt.Sprint(limit))
		}
		var out api.DeviceList
		if err := json.Unmarshal(e.mustCall(e.pool, "GET", "/api/v1/devices?"+q.Encode(), e.admin, nil, 200), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The example: a device without a site tag is not "lab".
	got := list(`hardware == "acme-gw-rev2" && tags.site != "lab"`, "", 0)
	if len(got.Devices) != 14 || got.Next != "" {
		t.Fatalf("selected %d devices (next %q), want the 14 rev2 devices outside the lab", len(got.Devices), got.Next)
	}
	for _, d := range got.Devices {
		if d.Hardware != "acme-gw-rev2" || d.Tags["site"] == "lab" || d.State != "enrolled" || d.LastSeen != nil {
			t.Fatalf("selected %+v", d)
		}
	}
	if got := list(`risk == "high" && has(tags.site) && security_version == 0 && version == "" && id.startsWith("gw-00")`, "", 0); len(got.Devices) != 1 || got.Devices[0].ID != "gw-001" {
		t.Fatalf("risk selector: %+v", got)
	}
	// Pages: limit, then after the next.
	p1 := list("", "", 12)
	if len(p1.Devices) != 12 || p1.Next != "gw-011" {
		t.Fatalf("first page: %d devices, next %q", len(p1.Devices), p1.Next)
	}
	p2 := list("", p1.Next, 20)
	if len(p2.Devices) != 18 || p2.Devices[0].ID != "gw-012" || p2.Next != "" {
		t.Fatalf("second page: %d devices from %s, next %q", len(p2.Devices), p2.Devices[0].ID, p2.Next)
	}
	// A selector matching nothing is an empty list, not an error.
	if got := list(`hardware == "nope"`, "", 0); len(got.Devices) != 0 || got.Next != "" {
		t.Fatalf("%+v", got)
	}
	// The device view carries tags and state.
	var d api.Device
	json.Unmarshal(e.mustCall(e.pool, "GET", "/api/v1/devices/gw-001", e.admin, nil, 200), &d)
	if d.Tags["risk"] != "high" || d.State != "enrolled" {
		t.Fatalf("%+v", d)
	}
	// Untag.
	if got := tag("gw-001", api.TagsRequest{Unset: []string{"risk"}}); len(got) != 1 {
		t.Fatalf("after untag: %v", got)
	}

	// Bad input, each a precise 400 (or 404).
	for _, c := range []struct{ sel, want string }{
		{`hardware ==`, "selector 1:12:"},
		{`hardware == 1`, "selector 1:10: found no matching overload"},
		{`color == "red"`, "selector 1:1: undeclared reference to 'color'"},
		{`hardware`, "selector 1:1: the expression gives string, not a bool"},
		{"hardware == \"a\" &&\n  nope", "selector 2:3:"},
		{strings.Repeat("a", 5000), "more than 4096"},
	} {
		code, b, _ := e.call(e.pool, "GET", "/api/v1/devices?select="+url.QueryEscape(c.sel), e.admin, nil)
		wantCode(t, code, b, 400, "bad-selector")
		if !strings.Contains(string(b), c.want) {
			t.Errorf("%q: %s, want %q", c.sel, b, c.want)
		}
	}
	for _, q := range []string{"limit=0", "limit=10001", "limit=x"} {
		code, b, _ := e.call(e.pool, "GET", "/api/v1/devices?"+q, e.admin, nil)
		wantCode(t, code, b, 400, "bad-limit")
	}
	for _, req := range []api.TagsRequest{
		{},
		{Set: map[string]string{"Site": "x"}},
		{Set: map[string]string{"site-x": "x"}},
		{Set: map[string]string{"site": strings.Repeat("x", 129)}},
		{Set: map[string]string{"site": "a\nb"}},
		{Set: map[string]string{"site": "x"}, Unset: []string{"site"}},
		{Unset: []string{"no such"}},
	} {
		code, b, _ := e.call(e.pool, "POST", "/api/v1/devices/gw-002/tags", e.admin, req)
		wantCode(t, code, b, 400, "bad-tag")
	}
	many := map[string]string{}
	for i := range 32 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	code, b, _ := e.call(e.pool, "POST", "/api/v1/devices/gw-002/tags", e.admin, api.TagsRequest{Set: many})
	wantCode(t, code, b, 400, "bad-tag") // 32 new and the site tag
	code, b, _ = e.call(e.pool, "POST", "/api/v1/devices/nope/tags", e.admin, api.TagsRequest{Set: map[string]string{"a": "b"}})
	wantCode(t, code, b, 404, "not-found")
	// Roles: an auditor lists, and may not tag.
	aud := e.token("aud", "auditor")
	e.mustCall(e.pool, "GET", "/api/v1/devices", aud, nil, 200)
	code, b, _ = e.call(e.pool, "POST", "/api/v1/devices/gw-002/tags", aud, api.TagsRequest{Set: map[string]string{"a": "b"}})
	wantCode(t, code, b, 403, "forbidden")

	// Releases: none, then the published one with its signer and log
	// index.
	var rels api.ReleaseList
	json.Unmarshal(e.mustCall(e.pool, "GET", "/api/v1/releases", aud, nil, 200), &rels)
	if len(rels.Releases) != 0 {
		t.Fatalf("%+v", rels)
	}
	e.publish("acme-gw-rev2")
	json.Unmarshal(e.mustCall(e.pool, "GET", "/api/v1/releases?product=acme-gw", aud, nil, 200), &rels)
	if len(rels.Releases) != 1 {
		t.Fatalf("%+v", rels)
	}
	r := rels.Releases[0]
	if r.Target != "acme-gw/1.0.0/fw.img" || r.Version != "1.0.0" || r.SecurityVersion != 1 || len(r.Signers) != 1 || r.Threshold != 1 ||
		!r.ThresholdMet || r.LogIndex == nil || *r.LogIndex != 0 || r.Created.IsZero() || r.Hardware[0] != "acme-gw-rev2" ||
		r.LogProof != api.LogProofVerified {
		t.Fatalf("%+v", r)
	}
	json.Unmarshal(e.mustCall(e.pool, "GET", "/api/v1/releases?product=other", aud, nil, 200), &rels)
	if len(rels.Releases) != 0 {
		t.Fatalf("%+v", rels)
	}
	code, b, _ = e.call(e.pool, "GET", "/api/v1/releases?product=Bad/x", aud, nil)
	wantCode(t, code, b, 400, "bad-product")
	// Tag changes are audited.
	entries, _ := st.AuditEntries(ctx, 0, 10000)
	n := 0
	for _, en := range entries {
		if en.Action == "tag-device" && en.Outcome == "ok" {
			n++
		}
	}
	if n != 12 {
		t.Errorf("%d tag-device audit entries, want 12", n)
	}
}
