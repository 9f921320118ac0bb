package msgconv

import (
	"regexp"
	"strings"
)

// replyPrefixRe matches one reply or forward prefix as mail clients in
// various languages write it: "Re:", "RE[2]:", "Fwd:", "AW:", "WG:", "SV:",
// "Antw:", "Automatic reply:", ... The full-width colon is used by CJK
// clients.
var replyPrefixRe = regexp.MustCompile(`(?i)^\s*(re|fw|fwd|aw|wg|sv|vs|antw|antwort|tr|rif|odp|res|enc|vb|ynt|答复|回复|回覆|转发|轉寄|automatic reply|autoreply)\s*(\[\d+\]|\(\d+\))?\s*[:：]\s*`)

// listTagRe matches a mailing-list tag such as "[city-news]".
var listTagRe = regexp.MustCompile(`^\s*\[[^\[\]]{1,64}\]\s*`)

// BaseSubject strips reply and forward prefixes (Re:, Fwd:, AW:, WG:, SV:,
// Antw:, ...) and mailing-list tags ("[list]"), repeatedly, and collapses
// white space. It is what threads are matched on when no message ID links
// two mails.
func BaseSubject(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	for {
		if m := replyPrefixRe.FindStringIndex(s); m != nil && m[1] < len(s) {
			s = s[m[1]:]
			continue
		}
		if m := listTagRe.FindStringIndex(s); m != nil && m[1] < len(s) {
			s = s[m[1]:]
			continue
		}
		break
	}
	return strings.TrimSpace(s)
}

// ReplySubject returns exactly one "Re: " followed by the base subject.
func ReplySubject(s string) string {
	b := BaseSubject(s)
	if b == "" {
		return "Re:"
	}
	return "Re: " + b
}

// ThreadCandidates returns the message IDs that may identify the thread e
// belongs to: References (root first) then In-Reply-To, without
// duplicates. The connector looks each up among the messages it has bridged.
func ThreadCandidates(e *Email) []string {
	var out []string
	seen := map[string]bool{}
	for _, list := range [][]string{e.References, e.InReplyTo} {
		for _, id := range list {
			if id != "" && !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}
