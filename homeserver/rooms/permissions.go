package rooms

import (
	"context"

	"maunium.net/go/mautrix/id"
)

// MaySendState reports whether user is joined to roomID and has the power level the room requires for state
// events of evType (what, for example, lets a room moderator delete an alias someone else created).
func (s *Service) MaySendState(ctx context.Context, roomID id.RoomID, user id.UserID, evType string) (bool, error) {
	room, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return false, err
	}
	st, err := s.loadAuthState(ctx, roomID, user, "")
	if err != nil {
		return false, err
	}
	if st.membership(user) != memberJoin {
		return false, nil
	}
	pl := st.levels(room.version)
	return pl.userLevel(user) >= pl.eventLevel(evType, true), nil
}
