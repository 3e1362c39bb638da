package directormeta_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/rampartfw/rampart/internal/directormeta"
)

// The custom metadata the device reads came from the network: a member
// given twice, in another case, or unknown is malformed, never read one
// way here and another way by a lenient parser (encoding/json keeps the
// last of two members and matches names case-insensitively).
func TestCustomMetadataIsStrict(t *testing.T) {
	for name, custom := range map[string]string{
		"duplicate device id":   `{"rampart":{"device_id":"gw-1","hardware_id":"hw","release":{},"device_id":"gw-2"}}`,
		"case variant":          `{"rampart":{"device_id":"gw-1","hardware_id":"hw","release":{},"Device_ID":"gw-2"}}`,
		"unknown member":        `{"rampart":{"device_id":"gw-1","hardware_id":"hw","release":{},"device":"gw-2"}}`,
		"duplicate wrapper":     `{"rampart":{"device_id":"gw-2","hardware_id":"hw","release":{}},"rampart":{"device_id":"gw-1","hardware_id":"hw","release":{}}}`,
		"duplicate in release":  `{"rampart":{"device_id":"gw-1","hardware_id":"hw","release":{"version":"1.0.0","version":"9.0.0"}}}`,
		"trailing data":         `{"rampart":{"device_id":"gw-1","hardware_id":"hw","release":{}}} {}`,
		"escaped duplicate key": `{"rampart":{"device_id":"gw-1","hardware_id":"hw","release":{},"device_\u0069d":"gw-2"}}`,
	} {
		raw := json.RawMessage(custom)
		_, err := directormeta.CustomOf(&metadata.TargetFiles{Path: "acme-gw/1.0.0/fw.img", Custom: &raw})
		if !errors.Is(err, directormeta.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// The binding of a director targets role to its device: a second,
// case-variant device id is malformed, not a way to name another device.
func TestDeviceBindingIsStrict(t *testing.T) {
	for name, custom := range map[string]map[string]any{
		"case variant":   {"rampart": map[string]any{"device_id": "gw-1", "Device_ID": "gw-2"}},
		"unknown member": {"rampart": map[string]any{"device_id": "gw-1", "owner": "gw-2"}},
	} {
		tr := metadata.Targets(time.Now().Add(time.Hour))
		tr.Signed.UnrecognizedFields = map[string]any{"custom": custom}
		err := directormeta.CheckDevice(tr, "gw-1")
		if !errors.Is(err, directormeta.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	tr := metadata.Targets(time.Now().Add(time.Hour))
	tr.Signed.UnrecognizedFields = map[string]any{"custom": map[string]any{"rampart": map[string]any{"device_id": "gw-1"}}}
	if err := directormeta.CheckDevice(tr, "gw-1"); err != nil {
		t.Fatalf("a plain binding: %v", err)
	}
}

// Two copies of release metadata that differ only by a duplicate member
// are not equal: one parser might read either value.
func TestEqualJSONRefusesDuplicates(t *testing.T) {
	if !directormeta.EqualJSON([]byte(`{"a":1,"b":[2]}`), []byte(`{"b":[2],"a":1}`)) {
		t.Fatal("equal documents compare unequal")
	}
	for _, b := range []string{`{"a":1,"a":1,"b":[2]}`, `{"a":1,"b":[2]} x`} {
		if directormeta.EqualJSON([]byte(b), []byte(`{"a":1,"b":[2]}`)) {
			t.Errorf("%s compares equal", b)
		}
	}
}
