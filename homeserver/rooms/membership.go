package rooms

import (
	"context"
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// ProfileFunc returns a local user's global display name and avatar URL ("" when unset or unknown). The
// service calls it to fill in member events; it must not call back into the rooms service.
type ProfileFunc func(ctx context.Context, userID id.UserID) (displayname, avatarURL string)

// SetProfileSource makes joins and invites carry the target's profile (displayname, avatar_url) unless the
// request's content sets them. Call it once at start-up, before the service is used.
func (s *Service) SetProfileSource(fn ProfileFunc) { s.profile = fn }

// MembershipRequest changes Target's membership in RoomID on behalf of Sender: "join" (Target = Sender),
// "invite", "leave" (Target = Sender leaves or rejects an invite; otherwise a kick or an unban), "ban" or
// "knock".
type MembershipRequest struct {
	RoomID     id.RoomID
	Sender     id.UserID
	Target     id.UserID
	Membership string
	Reason     string
	// Content holds extra member content (displayname, avatar_url, is_direct, ...); membership and reason
	// are set from the fields above.
	Content  map[string]any
	TS       int64
	TxnID    string
	DeviceID id.DeviceID
}

// SetMembership sends the m.room.member event of a membership change; the authorisation rules decide whether
// the sender may make it (mxerr.Forbidden otherwise).
func (s *Service) SetMembership(ctx context.Context, req MembershipRequest) (*Event, error) {
	switch req.Membership {
	case memberJoin, memberInvite, memberLeave, memberBan, memberKnock:
	default:
		return nil, mxerr.InvalidParam("unknown membership %q", req.Membership)
	}
	if req.Target == "" {
		req.Target = req.Sender
	}
	if _, _, err := req.Target.ParseAndValidateRelaxed(); err != nil {
		return nil, mxerr.InvalidParam("invalid user ID %q", req.Target)
	}
	content := make(map[string]any, len(req.Content)+3)
	for k, v := range req.Content {
		content[k] = v
	}
	content["membership"] = req.Membership
	if req.Reason != "" {
		content["reason"] = req.Reason
	} else {
		delete(content, "reason")
	}
	if (req.Membership == memberJoin || req.Membership == memberInvite) && s.profile != nil {
		_, hasName := content["displayname"]
		_, hasAvatar := content["avatar_url"]
		if !hasName || !hasAvatar {
			name, avatar := s.profile(ctx, req.Target)
			if !hasName && name != "" {
				content["displayname"] = name
			}
			if !hasAvatar && avatar != "" {
				content["avatar_url"] = avatar
			}
		}
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, mxerr.BadJSON("member content: %v", err)
	}
	stateKey := string(req.Target)
	ev, err := s.Send(ctx, SendRequest{
		RoomID: req.RoomID, Sender: req.Sender, Type: typeMember, StateKey: &stateKey, Content: raw,
		TS: req.TS, TxnID: req.TxnID, DeviceID: req.DeviceID,
	})
	if err != nil {
		if mxerr.As(err) != nil {
			return nil, err
		}
		return nil, fmt.Errorf("set membership: %w", err)
	}
	return ev, nil
}

// Join makes userID join roomID.
func (s *Service) Join(ctx context.Context, roomID id.RoomID, userID id.UserID) (*Event, error) {
	return s.SetMembership(ctx, MembershipRequest{RoomID: roomID, Sender: userID, Target: userID, Membership: memberJoin})
}

// Invite has sender invite target to roomID.
func (s *Service) Invite(ctx context.Context, roomID id.RoomID, sender, target id.UserID, reason string) (*Event, error) {
	return s.SetMembership(ctx, MembershipRequest{RoomID: roomID, Sender: sender, Target: target, Membership: memberInvite, Reason: reason})
}

// Leave makes userID leave roomID (or reject an invite to it).
func (s *Service) Leave(ctx context.Context, roomID id.RoomID, userID id.UserID, reason string) (*Event, error) {
	return s.SetMembership(ctx, MembershipRequest{RoomID: roomID, Sender: userID, Target: userID, Membership: memberLeave, Reason: reason})
}

// Kick has sender remove target from roomID.
func (s *Service) Kick(ctx context.Context, roomID id.RoomID, sender, target id.UserID, reason string) (*Event, error) {
	if sender == target {
		return nil, mxerr.InvalidParam("use leave to leave a room")
	}
	return s.SetMembership(ctx, MembershipRequest{RoomID: roomID, Sender: sender, Target: target, Membership: memberLeave, Reason: reason})
}

// Ban has sender ban target from roomID.
func (s *Service) Ban(ctx context.Context, roomID id.RoomID, sender, target id.UserID, reason string) (*Event, error) {
	return s.SetMembership(ctx, MembershipRequest{RoomID: roomID, Sender: sender, Target: target, Membership: memberBan, Reason: reason})
}

// Unban has sender lift target's ban from roomID (target's membership becomes leave). Unbanning someone who
// is not banned is mxerr.Forbidden rather than a kick.
func (s *Service) Unban(ctx context.Context, roomID id.RoomID, sender, target id.UserID, reason string) (*Event, error) {
	m, _, err := s.MembershipOf(ctx, roomID, target)
	if err != nil {
		return nil, err
	}
	if m != memberBan {
		return nil, mxerr.Forbidden("%s is not banned", target)
	}
	return s.SetMembership(ctx, MembershipRequest{RoomID: roomID, Sender: sender, Target: target, Membership: memberLeave, Reason: reason})
}
