package sync

import (
	"encoding/json"
	"maps"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/rooms"
)

// ClientEvent encodes ev in the client format for the given requester: the sending device (or the appservice,
// whose events carry no device) also gets unsigned.transaction_id, which clients use to match their local echo.
func ClientEvent(ev *rooms.Event, user id.UserID, device id.DeviceID) json.RawMessage {
	if ev.TxnID == "" || ev.Sender != user || ev.DeviceID != device {
		return ev.MarshalClient()
	}
	cp := *ev
	cp.Unsigned = maps.Clone(ev.Unsigned)
	if cp.Unsigned == nil {
		cp.Unsigned = map[string]any{}
	}
	cp.Unsigned["transaction_id"] = ev.TxnID
	return cp.MarshalClient()
}
