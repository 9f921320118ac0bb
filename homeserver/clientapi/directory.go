package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// maxPublicRooms caps one page of the public room directory.
const maxPublicRooms = 100

type publicRoom struct {
	RoomID           id.RoomID `json:"room_id"`
	Name             string    `json:"name,omitempty"`
	Topic            string    `json:"topic,omitempty"`
	CanonicalAlias   string    `json:"canonical_alias,omitempty"`
	AvatarURL        string    `json:"avatar_url,omitempty"`
	NumJoinedMembers int       `json:"num_joined_members"`
	WorldReadable    bool      `json:"world_readable"`
	GuestCanJoin     bool      `json:"guest_can_join"`
	JoinRule         string    `json:"join_rule,omitempty"`
	RoomType         string    `json:"room_type,omitempty"`
}

// describeRoom builds a directory entry from the room's current state.
func (a *API) describeRoom(ctx context.Context, roomID id.RoomID) (*publicRoom, error) {
	state, err := a.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	pr := &publicRoom{RoomID: roomID}
	for _, ev := range state {
		if ev.StateKeyString() != "" {
			if ev.Type == event.StateMember.Type && ev.Membership() == "join" {
				pr.NumJoinedMembers++
			}
			continue
		}
		var c map[string]any
		_ = json.Unmarshal(ev.Content, &c)
		str := func(k string) string { s, _ := c[k].(string); return s }
		switch ev.Type {
		case event.StateRoomName.Type:
			pr.Name = str("name")
		case event.StateTopic.Type:
			pr.Topic = str("topic")
		case event.StateCanonicalAlias.Type:
			pr.CanonicalAlias = str("alias")
		case event.StateRoomAvatar.Type:
			pr.AvatarURL = str("url")
		case event.StateJoinRules.Type:
			pr.JoinRule = str("join_rule")
		case event.StateHistoryVisibility.Type:
			pr.WorldReadable = str("history_visibility") == "world_readable"
		case event.StateGuestAccess.Type:
			pr.GuestCanJoin = str("guest_access") == "can_join"
		case event.StateCreate.Type:
			pr.RoomType = str("type")
		}
	}
	return pr, nil
}

func (a *API) publicRooms(w http.ResponseWriter, r *http.Request) {
	limit, since, term := maxPublicRooms, 0, ""
	q := r.URL.Query()
	parseInt := func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, mxerr.InvalidParam("bad number %q", s)
		}
		return n, nil
	}
	var err error
	if r.Method == http.MethodPost {
		var req struct {
			Limit  int    `json:"limit"`
			Since  string `json:"since"`
			Filter struct {
				GenericSearchTerm string `json:"generic_search_term"`
			} `json:"filter"`
		}
		if err := ReadJSON(r, &req); err != nil {
			RespondError(w, r, err)
			return
		}
		if req.Limit > 0 {
			limit = req.Limit
		}
		q.Set("since", req.Since)
		term = strings.ToLower(req.Filter.GenericSearchTerm)
	} else if s := q.Get("limit"); s != "" {
		if limit, err = parseInt(s); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	if s := strings.TrimPrefix(q.Get("since"), "o"); s != "" {
		if since, err = parseInt(s); err != nil {
			RespondError(w, r, err)
			return
		}
	}
	limit = min(max(limit, 1), maxPublicRooms)
	ids, err := a.rooms.PublicRooms(r.Context())
	if err != nil {
		RespondError(w, r, err)
		return
	}
	var all []*publicRoom
	for _, rid := range ids {
		pr, err := a.describeRoom(r.Context(), rid)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		if term != "" && !strings.Contains(strings.ToLower(pr.Name+" "+pr.Topic+" "+pr.CanonicalAlias), term) {
			continue
		}
		all = append(all, pr)
	}
	resp := map[string]any{"total_room_count_estimate": len(all), "chunk": []*publicRoom{}}
	if since < len(all) {
		end := min(since+limit, len(all))
		resp["chunk"] = all[since:end]
		if end < len(all) {
			resp["next_batch"] = "o" + strconv.Itoa(end)
		}
		if since > 0 {
			resp["prev_batch"] = "o" + strconv.Itoa(max(since-limit, 0))
		}
	}
	RespondJSON(w, http.StatusOK, resp)
}

func (a *API) getVisibility(w http.ResponseWriter, r *http.Request) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	vis, err := a.rooms.Visibility(r.Context(), roomID)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, map[string]string{"visibility": vis})
}

func (a *API) putVisibility(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	var req struct {
		Visibility string `json:"visibility"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.Visibility != "public" && req.Visibility != "private" {
		RespondError(w, r, mxerr.InvalidParam("visibility must be public or private"))
		return
	}
	ctx := r.Context()
	if err := a.requireStatePower(ctx, roomID, au.User); err != nil {
		RespondError(w, r, err)
		return
	}
	if err := a.rooms.SetVisibility(ctx, roomID, req.Visibility); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

// requireStatePower allows joined members whose power level reaches the room's state_default: publishing a room
// is a room-wide decision like changing its state.
func (a *API) requireStatePower(ctx context.Context, roomID id.RoomID, user id.UserID) error {
	m, _, err := a.rooms.MembershipOf(ctx, roomID, user)
	if err != nil || m != "join" {
		return mxerr.Forbidden("you are not in this room")
	}
	ev, err := a.rooms.StateEvent(ctx, roomID, event.StatePowerLevels.Type, "")
	if err != nil {
		if mxerr.As(err) != nil {
			return mxerr.Forbidden("the room has no power levels")
		}
		return err
	}
	var pl struct {
		Users        map[id.UserID]int64 `json:"users"`
		UsersDefault int64               `json:"users_default"`
		StateDefault *int64              `json:"state_default"`
	}
	_ = json.Unmarshal(ev.Content, &pl)
	level, ok := pl.Users[user]
	if !ok {
		level = pl.UsersDefault
	}
	need := int64(50)
	if pl.StateDefault != nil {
		need = *pl.StateDefault
	}
	if level < need {
		return mxerr.Forbidden("your power level is too low to publish this room")
	}
	return nil
}

func (a *API) roomAliases(w http.ResponseWriter, r *http.Request, au *Auth) {
	roomID, err := pathRoom(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if _, err := a.readableUpTo(r.Context(), roomID, au.User); err != nil {
		RespondError(w, r, err)
		return
	}
	aliases, err := a.rooms.Aliases(r.Context(), roomID)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if aliases == nil {
		aliases = []id.RoomAlias{}
	}
	RespondJSON(w, http.StatusOK, map[string]any{"aliases": aliases})
}
