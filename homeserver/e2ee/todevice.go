package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// MaxToDevicePerSync bounds the to-device messages in one /sync response; the rest follow in the next one. Olm
// key shares for a big room arrive as hundreds of messages, and one huge response is worse than a few syncs.
const MaxToDevicePerSync = 100

// Transaction IDs of to-device sends are kept for txnKeep, long enough for any client retry (clients retry for
// minutes, not days), and pruned every txnPruneEvery stream positions so the table stays small.
const (
	txnKeep       = 24 * time.Hour
	txnPruneEvery = 256
)

// ToDeviceRequest is one PUT /sendToDevice/{type}/{txnId}.
type ToDeviceRequest struct {
	// Sender is who sends, SenderDevice their device ("" for an appservice); with TxnID they make the send
	// idempotent.
	Sender       id.UserID
	SenderDevice id.DeviceID
	TxnID        string
	// Type is the event type of every message.
	Type string
	// Messages maps user → device ID (or "*" for all their devices) → content.
	Messages map[id.UserID]map[id.DeviceID]json.RawMessage
}

// SendToDevice queues the messages for their target devices and wakes those users' /sync. A retry with the same
// sender, device and transaction ID is accepted and not delivered again. Targets on other servers and devices
// that do not exist are skipped (the spec's send is fire-and-forget).
func (s *Service) SendToDevice(ctx context.Context, req ToDeviceRequest) error {
	if req.Type == "" || len(req.Type) > 255 {
		return mxerr.InvalidParam("bad event type")
	}
	type msg struct {
		user    id.UserID
		device  id.DeviceID
		content string
	}
	var msgs []msg
	for user, byDev := range req.Messages {
		if !s.isLocal(user) {
			continue
		}
		devs, err := s.devices.Devices(ctx, user)
		if err != nil {
			return fmt.Errorf("list devices of %s: %w", user, err)
		}
		for dev, content := range byDev {
			if len(content) == 0 || content[0] != '{' {
				return mxerr.BadJSON("to-device content must be a JSON object")
			}
			for _, d := range devs {
				// "*" reaches every device except those also named explicitly (they get their own message).
				if d.DeviceID == dev || (dev == "*" && byDev[d.DeviceID] == nil) {
					msgs = append(msgs, msg{user, d.DeviceID, string(content)})
				}
			}
		}
	}
	var woken []id.UserID
	_, err := s.advance(ctx, func(ctx context.Context, pos int64) (bool, error) {
		res, err := s.db.Exec(ctx, `INSERT INTO e2ee_to_device_txn (sender, device_id, txn_id, ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (sender, device_id, txn_id) DO NOTHING`, req.Sender, req.SenderDevice, req.TxnID, time.Now().UnixMilli())
		if err != nil {
			return false, fmt.Errorf("record transaction: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return false, nil // a retry: delivered the first time
		}
		if pos%txnPruneEvery == 0 {
			_, err = s.db.Exec(ctx, `DELETE FROM e2ee_to_device_txn WHERE ts<$1`, time.Now().Add(-txnKeep).UnixMilli())
			if err != nil {
				return false, fmt.Errorf("prune old transactions: %w", err)
			}
		}
		for _, m := range msgs {
			_, err := s.db.Exec(ctx, `INSERT INTO e2ee_to_device (user_id, device_id, pos, sender, event_type, content)
				VALUES ($1, $2, $3, $4, $5, $6)`, m.user, m.device, pos, req.Sender, req.Type, m.content)
			if err != nil {
				return false, fmt.Errorf("queue to-device message: %w", err)
			}
			if !slices.Contains(woken, m.user) {
				woken = append(woken, m.user)
			}
		}
		return len(msgs) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("send to-device %s: %w", req.Type, err)
	}
	if s.waker != nil && len(woken) > 0 {
		s.waker.WakeUsers(woken...)
	}
	return nil
}

// toDevice returns device's queued messages with a position in (since, upTo], oldest first, at most
// limit, and the position of the last one returned (upTo when all fit).
func (s *Service) toDevice(ctx context.Context, user id.UserID, device id.DeviceID, since, upTo int64, limit int) ([]json.RawMessage, int64, error) {
	rows, err := s.db.Query(ctx, `SELECT pos, sender, event_type, content FROM e2ee_to_device
		WHERE user_id=$1 AND device_id=$2 AND pos>$3 AND pos<=$4 ORDER BY pos LIMIT $5`,
		user, device, since, upTo, limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("load to-device messages: %w", err)
	}
	defer rows.Close()
	out := []json.RawMessage{}
	last := upTo
	for rows.Next() {
		var pos int64
		var sender, typ, content string
		if err := rows.Scan(&pos, &sender, &typ, &content); err != nil {
			return nil, 0, fmt.Errorf("load to-device messages: %w", err)
		}
		if len(out) == limit {
			break // more than fit: stop at the previous message's position
		}
		raw, _ := json.Marshal(map[string]any{"sender": sender, "type": typ, "content": json.RawMessage(content)})
		out = append(out, raw)
		last = pos
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("load to-device messages: %w", err)
	}
	if len(out) < limit {
		last = upTo
	}
	return out, last, nil
}

// ackToDevice deletes device's messages up to pos: the client has them, since it synced with a later token.
func (s *Service) ackToDevice(ctx context.Context, user id.UserID, device id.DeviceID, pos int64) error {
	_, err := s.db.Exec(ctx, `DELETE FROM e2ee_to_device WHERE user_id=$1 AND device_id=$2 AND pos<=$3`, user, device, pos)
	if err != nil {
		return fmt.Errorf("delete acknowledged to-device messages: %w", err)
	}
	return nil
}
