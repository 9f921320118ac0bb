package clientapi

import "maunium.net/go/mautrix/id"

// rule builds one push rule in the client format.
func rule(ruleID string, conds []map[string]any, actions ...any) map[string]any {
	if actions == nil {
		actions = []any{}
	}
	r := map[string]any{"rule_id": ruleID, "default": true, "enabled": true, "actions": actions}
	if conds != nil {
		r["conditions"] = conds
	}
	return r
}

func match(key, pattern string) map[string]any {
	return map[string]any{"kind": "event_match", "key": key, "pattern": pattern}
}

func propIs(key string, value any) map[string]any {
	return map[string]any{"kind": "event_property_is", "key": key, "value": value}
}

var (
	notify         = "notify"
	soundDefault   = map[string]any{"set_tweak": "sound", "value": "default"}
	soundRing      = map[string]any{"set_tweak": "sound", "value": "ring"}
	highlight      = map[string]any{"set_tweak": "highlight"}
	highlightFalse = map[string]any{"set_tweak": "highlight", "value": false}
)

// DefaultPushRules returns the spec's predefined push rule set (Client-Server API, "Predefined Rules") for user.
// Rules cannot be changed yet, so this is also the user's current rule set.
func DefaultPushRules(user id.UserID) map[string]any {
	localpart, _, _ := user.Parse()
	master := rule(".m.rule.master", []map[string]any{})
	master["enabled"] = false
	override := []map[string]any{
		master,
		rule(".m.rule.suppress_notices", []map[string]any{match("content.msgtype", "m.notice")}),
		rule(".m.rule.invite_for_me", []map[string]any{
			match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", string(user)),
		}, notify, soundDefault, highlightFalse),
		rule(".m.rule.member_event", []map[string]any{match("type", "m.room.member")}),
		rule(".m.rule.is_user_mention", []map[string]any{{
			"kind": "event_property_contains", "key": `content.m\.mentions.user_ids`, "value": string(user),
		}}, notify, soundDefault, highlight),
		rule(".m.rule.is_room_mention", []map[string]any{
			propIs(`content.m\.mentions.room`, true), {"kind": "sender_notification_permission", "key": "room"},
		}, notify, highlight),
		rule(".m.rule.tombstone", []map[string]any{match("type", "m.room.tombstone"), match("state_key", "")}, notify, highlight),
		rule(".m.rule.reaction", []map[string]any{match("type", "m.reaction")}),
		rule(".m.rule.room.server_acl", []map[string]any{match("type", "m.room.server_acl"), match("state_key", "")}),
		rule(".m.rule.suppress_edits", []map[string]any{propIs(`content.m\.relates_to.rel_type`, "m.replace")}),
	}
	userName := rule(".m.rule.contains_user_name", nil, notify, soundDefault, highlight)
	userName["pattern"] = localpart
	twoMembers := map[string]any{"kind": "room_member_count", "is": "2"}
	underride := []map[string]any{
		rule(".m.rule.call", []map[string]any{match("type", "m.call.invite")}, notify, soundRing, highlightFalse),
		rule(".m.rule.encrypted_room_one_to_one", []map[string]any{twoMembers, match("type", "m.room.encrypted")},
			notify, soundDefault, highlightFalse),
		rule(".m.rule.room_one_to_one", []map[string]any{twoMembers, match("type", "m.room.message")},
			notify, soundDefault, highlightFalse),
		rule(".m.rule.message", []map[string]any{match("type", "m.room.message")}, notify, highlightFalse),
		rule(".m.rule.encrypted", []map[string]any{match("type", "m.room.encrypted")}, notify, highlightFalse),
	}
	return map[string]any{
		"override":  override,
		"content":   []map[string]any{userName},
		"room":      []map[string]any{},
		"sender":    []map[string]any{},
		"underride": underride,
	}
}
