package e2ee

import (
	"context"

	"maunium.net/go/mautrix/id"

	hsync "github.com/passerelle/passerelle/homeserver/sync"
)

var _ hsync.E2EE = (*Service)(nil)

// SyncData implements sync.E2EE: Sync's answer in the sync package's shape (Pos below upTo when not every
// to-device message fitted).
func (s *Service) SyncData(ctx context.Context, user id.UserID, device id.DeviceID, since, upTo int64, initial bool) (*hsync.E2EEData, error) {
	d, err := s.Sync(ctx, user, device, since, upTo, initial)
	if err != nil {
		return nil, err
	}
	return &hsync.E2EEData{
		ToDevice: d.ToDevice, Changed: d.Changed, Left: d.Left,
		OTKCount: d.OneTimeKeyCounts, FallbackKeys: d.UnusedFallbackKeyTypes, Pos: d.Pos,
	}, nil
}
