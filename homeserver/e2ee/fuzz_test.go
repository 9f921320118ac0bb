package e2ee_test

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/e2ee"
	"github.com/passerelle/passerelle/homeserver/internal/dbtest"
	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// FuzzUpload feeds arbitrary JSON to the key upload and signature parsers. Invariants: every refusal is a
// client-visible *mxerr.Error (never a 500), an accepted upload never counts negative keys, and the stored device
// keys always name the uploading user and device.
func FuzzUpload(f *testing.F) {
	f.Add([]byte(`{"device_keys":{"user_id":"@alice:e2ee.test","device_id":"ADEV","keys":{"ed25519:ADEV":"x"}}}`))
	f.Add([]byte(`{"one_time_keys":{"signed_curve25519:A":{"key":"k"},"curve25519:B":"plain"}}`))
	f.Add([]byte(`{"fallback_keys":{"signed_curve25519:F":{"key":"f","fallback":true}}}`))
	f.Add([]byte(`{"one_time_keys":{"nocolon":"x",":":1}}`))
	f.Add([]byte(`{"device_keys":{"user_id":"@bob:e2ee.test","device_id":"ADEV"}}`))
	f.Add([]byte(`{"device_keys":{"user_id":"@alice:e2ee.test","device_id":"ADEV","n":1.5}}`))
	f.Add([]byte(`{"one_time_keys":{"a:b":[1,2]}}`))
	fx := newFixture(f, dbtest.Open(f, "sqlite"))
	alice := fx.user("alice", "ADEV")
	f.Fuzz(func(t *testing.T, body []byte) {
		var up e2ee.Upload
		if json.Unmarshal(body, &up) != nil {
			return
		}
		counts, err := fx.svc.Upload(t.Context(), alice, "ADEV", &up)
		if err != nil {
			if mxerr.As(err) == nil {
				t.Fatalf("upload of %q failed with a server error: %v", body, err)
			}
		} else {
			for alg, n := range counts {
				if n < 0 {
					t.Fatalf("negative count %s=%d", alg, n)
				}
			}
		}
		res, err := fx.svc.Query(t.Context(), alice, map[id.UserID][]id.DeviceID{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		for dev, keys := range res.DeviceKeys[alice] {
			if dev != "ADEV" || keys["user_id"] != string(alice) || keys["device_id"] != "ADEV" {
				t.Fatalf("stored device keys do not name the uploader: %s %v", dev, keys)
			}
		}
		var sigs map[id.UserID]map[string]json.RawMessage
		if json.Unmarshal(body, &sigs) == nil {
			if _, err := fx.svc.UploadSignatures(t.Context(), alice, sigs); err != nil && mxerr.As(err) == nil {
				t.Fatalf("signature upload of %q failed with a server error: %v", body, err)
			}
		}
	})
}
