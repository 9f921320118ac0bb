package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/homeserver/mxerr"
)

// A user's push rules live in their m.push_rules global account data ({"global": ruleset}), as the spec
// describes, so changes reach every client through /sync. Until the user changes something, the ruleset is
// the predefined one (DefaultPushRules).

// ruleKinds are the rule kinds in priority order. "postcontent" (MSC4306, thread subscriptions) holds
// no server-default rules here; it is accepted so clients can address it (a missing rule is a 404).
var ruleKinds = []string{"override", "content", "postcontent", "room", "sender", "underride"}

type ruleset map[string][]map[string]any

func (a *API) loadRules(ctx context.Context, user id.UserID) (ruleset, error) {
	raw, err := a.users.AccountData(ctx, user, "", "m.push_rules")
	if err != nil {
		if e := mxerr.As(err); e == nil || e.Code != "M_NOT_FOUND" {
			return nil, err
		}
		raw, _ = json.Marshal(map[string]any{"global": DefaultPushRules(user)})
	}
	var c struct {
		Global ruleset `json:"global"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.Global == nil {
		raw, _ = json.Marshal(DefaultPushRules(user))
		c.Global = ruleset{}
		_ = json.Unmarshal(raw, &c.Global)
	}
	for _, k := range ruleKinds {
		if c.Global[k] == nil {
			c.Global[k] = []map[string]any{}
		}
	}
	return c.Global, nil
}

func (a *API) saveRules(ctx context.Context, user id.UserID, rs ruleset) error {
	raw, err := json.Marshal(map[string]any{"global": rs})
	if err != nil {
		return err
	}
	if _, err := a.users.SetAccountData(ctx, user, "", "m.push_rules", raw); err != nil {
		return err
	}
	a.sync.NotifyAccountData(user)
	return nil
}

func findRule(list []map[string]any, ruleID string) int {
	return slices.IndexFunc(list, func(r map[string]any) bool { return r["rule_id"] == ruleID })
}

func (a *API) pushRules(w http.ResponseWriter, r *http.Request, au *Auth) {
	rs, err := a.loadRules(r.Context(), au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	parts := strings.Split(strings.Trim(r.PathValue("rest"), "/"), "/")
	if parts[0] == "" {
		RespondJSON(w, http.StatusOK, map[string]any{"global": rs})
		return
	}
	if parts[0] != "global" || len(parts) > 4 {
		RespondError(w, r, mxerr.NotFound("unknown push rule scope"))
		return
	}
	if len(parts) == 1 {
		RespondJSON(w, http.StatusOK, rs)
		return
	}
	list, ok := rs[parts[1]]
	if !ok {
		RespondError(w, r, mxerr.InvalidParam("unknown push rule kind"))
		return
	}
	if len(parts) == 2 {
		RespondJSON(w, http.StatusOK, list)
		return
	}
	i := findRule(list, parts[2])
	if i < 0 {
		RespondError(w, r, mxerr.NotFound("push rule not found"))
		return
	}
	if len(parts) == 3 {
		RespondJSON(w, http.StatusOK, list[i])
		return
	}
	switch parts[3] {
	case "enabled":
		RespondJSON(w, http.StatusOK, map[string]any{"enabled": list[i]["enabled"]})
	case "actions":
		RespondJSON(w, http.StatusOK, map[string]any{"actions": list[i]["actions"]})
	default:
		RespondError(w, r, mxerr.NotFound("unknown push rule attribute"))
	}
}

// ruleTarget reads {kind} and {ruleID} of a push rule path in the global scope.
func ruleTarget(r *http.Request) (kind, ruleID string, err error) {
	if r.PathValue("scope") != "global" {
		return "", "", mxerr.InvalidParam("only the global scope exists")
	}
	kind, ruleID = r.PathValue("kind"), r.PathValue("ruleID")
	if !slices.Contains(ruleKinds, kind) {
		return "", "", mxerr.InvalidParam("unknown push rule kind %q", kind)
	}
	if ruleID == "" || len(ruleID) > 255 {
		return "", "", mxerr.InvalidParam("invalid rule ID")
	}
	return kind, ruleID, nil
}

func (a *API) putPushRule(w http.ResponseWriter, r *http.Request, au *Auth) {
	kind, ruleID, err := ruleTarget(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	if strings.HasPrefix(ruleID, ".") {
		RespondError(w, r, mxerr.InvalidParam("rule IDs starting with a dot are reserved for server-default rules"))
		return
	}
	switch kind {
	case "room":
		if _, err := parseRoomID(ruleID); err != nil {
			RespondError(w, r, mxerr.InvalidParam("a room rule's ID is the room ID"))
			return
		}
	case "sender":
		if _, _, err := id.UserID(ruleID).ParseAndValidateRelaxed(); err != nil {
			RespondError(w, r, mxerr.InvalidParam("a sender rule's ID is the user ID"))
			return
		}
	}
	var req struct {
		Actions    []any            `json:"actions"`
		Conditions []map[string]any `json:"conditions"`
		Pattern    string           `json:"pattern"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	if req.Actions == nil {
		RespondError(w, r, mxerr.MissingParam("actions is required"))
		return
	}
	rule := map[string]any{"rule_id": ruleID, "default": false, "enabled": true, "actions": req.Actions}
	switch kind {
	case "override", "postcontent", "underride":
		if req.Conditions == nil {
			req.Conditions = []map[string]any{}
		}
		rule["conditions"] = req.Conditions
	case "content":
		if req.Pattern == "" {
			RespondError(w, r, mxerr.MissingParam("pattern is required for content rules"))
			return
		}
		rule["pattern"] = req.Pattern
	}
	ctx := r.Context()
	rs, err := a.loadRules(ctx, au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	list := rs[kind]
	if i := findRule(list, ruleID); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	// New user rules go before the server-default rules of their kind (after .m.rule.master), unless the
	// client names a neighbour with before/after.
	pos := 0
	if kind == "override" && len(list) > 0 && list[0]["rule_id"] == ".m.rule.master" {
		pos = 1
	}
	q := r.URL.Query()
	if b := q.Get("before"); b != "" {
		if pos = findRule(list, b); pos < 0 {
			RespondError(w, r, mxerr.NotFound("no rule %q to insert before", b))
			return
		}
	} else if af := q.Get("after"); af != "" {
		i := findRule(list, af)
		if i < 0 {
			RespondError(w, r, mxerr.NotFound("no rule %q to insert after", af))
			return
		}
		pos = i + 1
	}
	rs[kind] = slices.Insert(list, pos, rule)
	if err := a.saveRules(ctx, au.User, rs); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) deletePushRule(w http.ResponseWriter, r *http.Request, au *Auth) {
	kind, ruleID, err := ruleTarget(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	ctx := r.Context()
	rs, err := a.loadRules(ctx, au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	i := findRule(rs[kind], ruleID)
	if i < 0 {
		RespondError(w, r, mxerr.NotFound("push rule not found"))
		return
	}
	if rs[kind][i]["default"] == true {
		RespondError(w, r, mxerr.Forbidden("server-default rules cannot be deleted"))
		return
	}
	rs[kind] = slices.Delete(rs[kind], i, i+1)
	if err := a.saveRules(ctx, au.User, rs); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}

func (a *API) putPushRuleAttr(w http.ResponseWriter, r *http.Request, au *Auth) {
	kind, ruleID, err := ruleTarget(r)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	attr := r.PathValue("attr")
	var req struct {
		Enabled *bool  `json:"enabled"`
		Actions *[]any `json:"actions"`
	}
	if err := ReadJSON(r, &req); err != nil {
		RespondError(w, r, err)
		return
	}
	ctx := r.Context()
	rs, err := a.loadRules(ctx, au.User)
	if err != nil {
		RespondError(w, r, err)
		return
	}
	i := findRule(rs[kind], ruleID)
	if i < 0 {
		RespondError(w, r, mxerr.NotFound("push rule not found"))
		return
	}
	switch attr {
	case "enabled":
		if req.Enabled == nil {
			RespondError(w, r, mxerr.MissingParam("enabled is required"))
			return
		}
		rs[kind][i]["enabled"] = *req.Enabled
	case "actions":
		if req.Actions == nil {
			RespondError(w, r, mxerr.MissingParam("actions is required"))
			return
		}
		rs[kind][i]["actions"] = *req.Actions
	default:
		RespondError(w, r, mxerr.Unrecognized("unknown push rule attribute"))
		return
	}
	if err := a.saveRules(ctx, au.User, rs); err != nil {
		RespondError(w, r, err)
		return
	}
	RespondJSON(w, http.StatusOK, struct{}{})
}
