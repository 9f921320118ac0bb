package clientapi

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// maxUserDirectoryResults caps one user directory search.
const maxUserDirectoryResults = 50

type userDirResult struct {
	UserID      id.UserID `json:"user_id"`
	DisplayName string    `json:"display_name,omitempty"`
	AvatarURL   string    `json:"avatar_url,omitempty"`
}

// userDirectorySearch searches the users who share a joined room with the requester (by user ID and display
// name, case-insensitively), plus any local user whose full ID is typed exactly — the spec's minimum, and all
// that an invite dialog needs.
func (a *API) userDirectorySearch(w http.ResponseWriter, r *http.Request, au *Auth) {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      int     `json:"limit"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.SearchTerm == nil {
		RespondError(w, r, mxerr.MissingParam("search_term is required"))
		return
	}
	limit := req.Limit
	if limit <= 0 || limit > maxUserDirectoryResults {
		limit = 10
	}
	term := strings.ToLower(strings.TrimSpace(*req.SearchTerm))
	ctx := r.Context()
	found := map[id.UserID]*userDirResult{}
	joined, err := a.rooms.RoomsForUser(ctx, au.User, "join")
	if err != nil {
		RespondError(w, r, err)
		return
	}
	for _, room := range joined {
		members, err := a.rooms.Members(ctx, room)
		if err != nil {
			RespondError(w, r, err)
			return
		}
		for _, ev := range members {
			if ev.Membership() != "join" {
				continue
			}
			uid := id.UserID(ev.StateKeyString())
			var c struct {
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			}
			_ = json.Unmarshal(ev.Content, &c)
			if strings.Contains(strings.ToLower(string(uid)), term) || strings.Contains(strings.ToLower(c.DisplayName), term) {
				found[uid] = &userDirResult{UserID: uid, DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
			}
		}
	}
	if uid := id.UserID(strings.TrimSpace(*req.SearchTerm)); found[uid] == nil && strings.HasPrefix(string(uid), "@") {
		if ok, err := a.users.Exists(ctx, uid); err == nil && ok {
			name, avatar, _ := a.users.Profile(ctx, uid)
			found[uid] = &userDirResult{UserID: uid, DisplayName: name, AvatarURL: avatar}
		}
	}
	results := make([]*userDirResult, 0, len(found))
	for _, res := range found {
		results = append(results, res)
	}
	sort.Slice(results, func(i, j int) bool { return results[i].UserID < results[j].UserID })
	limited := len(results) > limit
	if limited {
		results = results[:limit]
	}
	RespondJSON(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
}
