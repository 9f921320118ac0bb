package sync

import (
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

func signalled(l *Listener) bool {
	select {
	case <-l.C():
		return true
	default:
		return false
	}
}

func TestNotifierWakesOnlyAffected(t *testing.T) {
	n := NewNotifier()
	a := n.Listen("@a:s", []id.RoomID{"!r1:s"})
	b := n.Listen("@b:s", []id.RoomID{"!r2:s"})
	c := n.Listen("@c:s", nil)
	n.WakeRoom("!r1:s")
	if !signalled(a) || signalled(b) || signalled(c) {
		t.Fatal("room wake reached the wrong listeners")
	}
	n.WakeUsers("@c:s")
	if signalled(a) || signalled(b) || !signalled(c) {
		t.Fatal("user wake reached the wrong listeners")
	}
	// Wakes never block, even when nobody reads.
	for i := 0; i < 10; i++ {
		n.WakeRoom("!r2:s")
	}
	if !signalled(b) || signalled(b) {
		t.Fatal("a burst of wakes should leave exactly one signal")
	}
	a.Close()
	a.Close()
	b.Close()
	c.Close()
	if n.Waiters("@a:s") != 0 || len(n.byRoom) != 0 || len(n.byUser) != 0 {
		t.Fatal("listeners not removed")
	}
}

func TestTypingExpires(t *testing.T) {
	var woken []id.RoomID
	done := make(chan struct{}, 4)
	ty := NewTyping(func(r id.RoomID) { woken = append(woken, r); done <- struct{}{} })
	start := ty.Pos()
	ty.Set("!r:s", "@u:s", true, 50*time.Millisecond)
	<-done
	users, changed := ty.Since("!r:s", start)
	if len(users) != 1 || !changed {
		t.Fatalf("typing not recorded: %v %v", users, changed)
	}
	mid := ty.Pos()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("typing did not expire")
	}
	users, changed = ty.Since("!r:s", mid)
	if len(users) != 0 || !changed {
		t.Fatalf("after expiry: %v %v", users, changed)
	}
	// Stopping when not typing changes nothing and wakes nobody.
	before := ty.Pos()
	ty.Set("!r:s", "@u:s", false, 0)
	if ty.Pos() != before || len(woken) != 2 {
		t.Fatalf("no-op stop advanced the stream")
	}
}
