package rooms

import "testing"

// TestEventVisible walks the spec's history visibility table: membership at the event against the room's
// visibility, for members and for users reading from outside (peeking).
func TestEventVisible(t *testing.T) {
	cases := []struct {
		vis, membership string
		peeking, want   bool
	}{
		{VisibilityWorldReadable, memberLeave, true, true},
		{VisibilityShared, memberLeave, false, true},
		{VisibilityShared, memberLeave, true, false},
		{VisibilityShared, memberJoin, true, true},
		{VisibilityInvited, memberInvite, false, true},
		{VisibilityInvited, memberLeave, false, false},
		{VisibilityInvited, memberJoin, false, true},
		{VisibilityJoined, memberInvite, false, false},
		{VisibilityJoined, memberLeave, false, false},
		{VisibilityJoined, memberJoin, false, true},
		{VisibilityJoined, memberBan, false, false},
	}
	for _, c := range cases {
		if got := EventVisible(c.vis, c.membership, c.peeking); got != c.want {
			t.Errorf("EventVisible(%s, %s, peeking=%v) = %v, want %v", c.vis, c.membership, c.peeking, got, c.want)
		}
	}
	for raw, want := range map[string]string{`{"history_visibility":"joined"}`: VisibilityJoined, `{}`: VisibilityShared,
		`{"history_visibility":"bogus"}`: VisibilityShared, `not json`: VisibilityShared} {
		if got := historyVisibilityOf(&Event{Content: []byte(raw)}); got != want {
			t.Errorf("historyVisibilityOf(%s) = %s, want %s", raw, got, want)
		}
	}
}
