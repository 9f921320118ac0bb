package hub

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/passerelle/passerelle/homeserver/rooms"
)

const (
	// noticeInterval is the least time between two "switched off" notices in one room: enough to tell every
	// user who writes, without answering each message of a burst.
	noticeInterval = time.Minute
	// noticeQueue is how many candidate events wait for the notice worker; beyond it they are dropped (the
	// notice is a courtesy: the messages themselves are kept in the appservice queue either way).
	noticeQueue = 256
)

// noticeText is what the bot says in a room of a switched-off bridge when a user writes there.
func noticeText(bridgeID string) string {
	return "The " + bridgeID + " bridge is switched off by the server administrator. Your message is kept and " +
		"will be delivered to the bridge when it is switched back on."
}

// noticer answers users who write in a room of a switched-off bridge (its management room with the bot, or a
// portal) with one notice from the bridge's bot (or one of its ghosts if the bot is not in the room).
type noticer struct {
	h    *Hub
	jobs chan *rooms.Event
	mu   sync.Mutex
	last map[string]time.Time // bridge ID + room ID → time of the last notice
}

func newNoticer(h *Hub) *noticer {
	return &noticer{h: h, jobs: make(chan *rooms.Event, noticeQueue), last: make(map[string]time.Time)}
}

// observe is a rooms subscriber: it must not block nor call rooms.Send, so candidates go to run's queue.
func (n *noticer) observe(ev *rooms.Event) {
	if !n.h.anyDisabled() || ev.StateKey != nil {
		return
	}
	switch ev.Type {
	case event.EventMessage.Type, event.EventEncrypted.Type, event.EventSticker.Type:
	default:
		return
	}
	// Bridge users (ghosts, bots) are never answered: only people.
	for _, r := range n.h.regs {
		if r.IsInterestedUser(ev.Sender) {
			return
		}
	}
	select {
	case n.jobs <- ev:
	default:
	}
}

// run answers queued events until ctx ends.
func (n *noticer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-n.jobs:
			n.answer(ctx, ev)
		}
	}
}

func (n *noticer) answer(ctx context.Context, ev *rooms.Event) {
	log := n.h.log.With().Str("room_id", ev.RoomID.String()).Logger()
	src := n.h.hs.Rooms()
	for _, bridgeID := range n.h.host.IDs() {
		if on, _ := n.h.host.Enabled(bridgeID); on {
			continue
		}
		reg := n.h.host.RegistrationOf(bridgeID)
		if reg == nil {
			continue
		}
		key := bridgeID + "\x00" + ev.RoomID.String()
		n.mu.Lock()
		recent := time.Since(n.last[key]) < noticeInterval
		n.mu.Unlock()
		if recent {
			continue
		}
		from, err := joinedMemberOf(ctx, src, reg, ev.RoomID)
		if err != nil {
			log.Err(err).Msg("Cannot check whether a room belongs to a switched-off bridge")
			continue
		}
		if from == "" {
			continue
		}
		content, _ := json.Marshal(map[string]any{"msgtype": event.MsgNotice, "body": noticeText(bridgeID)})
		if _, err := src.Send(ctx, rooms.SendRequest{RoomID: ev.RoomID, Sender: from, Type: event.EventMessage.Type,
			Content: content}); err != nil {
			log.Err(err).Str("bridge_id", bridgeID).Msg("Cannot tell a user that the bridge is switched off")
			continue
		}
		n.mu.Lock()
		n.last[key] = time.Now()
		n.mu.Unlock()
		log.Info().Str("bridge_id", bridgeID).Stringer("user_id", ev.Sender).
			Msg("Told a user that the bridge is switched off")
	}
}

// countRemote is a rooms subscriber feeding passerelle_bridge_remote_events_total: non-state events sent by a
// bridge's ghosts (not its bot, whose messages are the bridge's own notices).
func (h *Hub) countRemote(ev *rooms.Event) {
	if ev.StateKey != nil {
		return
	}
	for _, bridgeID := range h.host.IDs() {
		reg := h.regByID(bridgeID)
		if reg == nil || !reg.OwnsUserExclusively(ev.Sender) || ev.Sender.Localpart() == reg.SenderLocalpart {
			continue
		}
		h.metrics.remoteEvents.WithLabelValues(bridgeID).Inc()
		return
	}
}

// anyDisabled reports whether some bridge is switched off (a cheap check for every event).
func (h *Hub) anyDisabled() bool { return h.host.AnyDisabled() }
