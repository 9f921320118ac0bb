package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jhillyerd/enmime/v2"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/homeserver/users"
	"github.com/passerelle/passerelle/hub"
	"github.com/passerelle/passerelle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// waitTimeout bounds every single wait for something to happen; all of them normally take well under a second
// (IMAP IDLE notices new mail about 0.5 s after delivery).
const waitTimeout = 60 * time.Second

// TestEmailThreadRoundTrip is issue 2's end-to-end test: create a user, log in to the email bridge through the
// bot (a wrong password first), survive a dropped IMAP connection, deliver a mail over SMTP from an outside
// address, see the invite, the portal room and the message arrive in /sync, reply from Matrix, read the reply
// from the outside mailbox over IMAP and check its threading headers and Sent copy; then stop the hub, deliver
// an HTML answer with an image while it is down, start it again, and check the answer lands in the same room
// and nothing is bridged or sent twice.
func TestEmailThreadRoundTrip(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		roundTrip(t, "sq", configs.Database{Type: "sqlite", MaxOpenConns: 20})
	})
	t.Run("postgres", func(t *testing.T) {
		roundTrip(t, "pg", configs.Database{Type: "postgres", URI: testenv.Postgres(t), MaxOpenConns: 20})
	})
}

// runSeq numbers the round trips of this process, so that each has mailboxes of its own.
var runSeq atomic.Int64

func roundTrip(t *testing.T, tag string, db configs.Database) {
	ctx := t.Context()
	ms := testenv.Mail(t)
	// The mail servers are shared by the subtests (and by -count runs): each uses its own mailboxes.
	tag = fmt.Sprintf("%s%d", tag, runSeq.Add(1))
	const alicePass, carolPass = "alice mail password", "carol mail password"
	aliceAddr := ms.AddUser(t, "alice-"+tag, alicePass)
	carolAddr := "carol-" + tag + "@" + testenv.OtherDomain
	ms.AddAddress(t, carolAddr, carolPass)

	cfg := configs.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Database = db
	cfg.Bridges.Email.AllowInsecure = true
	cfg.Bridges.Email.IdleTimeout = 30 * time.Second
	h := startHub(t, cfg, "")

	// A person gets an account (as `passerelle user create` does) and logs in with their password.
	if _, err := h.Homeserver().Users().Register(ctx, "alice", "matrix password", users.RegisterOpts{}); err != nil {
		t.Fatalf("create user: %v", err)
	}
	cli, err := mautrix.NewClient(h.url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password:         "matrix password",
		StoreCredentials: true,
	}); err != nil {
		t.Fatalf("login: %v", err)
	}
	s := newSyncer(t, cli)

	// DM the bridge bot and log in to the mailbox, answering the prompts.
	bot := id.NewUserID(cfg.Bridges.Email.BotLocalpart, cfg.Server.ServerName)
	dm, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot}, IsDirect: true,
		Preset: "trusted_private_chat"})
	if err != nil {
		t.Fatalf("create DM with %s: %v", bot, err)
	}
	s.wait("the bot joins the DM", func(r id.RoomID, e *event.Event) bool {
		return r == dm.RoomID && e.Type == event.StateMember && e.GetStateKey() == bot.String() &&
			e.Content.AsMember().Membership == event.MembershipJoin
	})
	answers := map[string]string{
		"email address": aliceAddr,
		"IMAP server":   ms.Host, "IMAP port": strconv.Itoa(ms.IMAPPort), "IMAP security": "none",
		"SMTP server": ms.Host, "SMTP port": strconv.Itoa(ms.SMTPPort), "SMTP security": "none",
		"user name": aliceAddr,
	}
	// loginDialogue sends "login", answers every prompt, and returns the bot's final reply and whether it is
	// a success.
	loginDialogue := func(password string) (string, bool) {
		t.Helper()
		if _, err := cli.SendText(ctx, dm.RoomID, "login"); err != nil {
			t.Fatal(err)
		}
		asked := map[string]bool{}
		defer func() {
			for name := range answers {
				if !asked[name] {
					t.Errorf("the bot never asked for %q", name)
				}
			}
		}()
		for {
			_, e := s.wait("a reply from the bot", func(r id.RoomID, e *event.Event) bool {
				return r == dm.RoomID && e.Sender == bot && e.Type == event.EventMessage
			})
			body := e.Content.AsMessage().Body
			first, _, _ := strings.Cut(body, "\n")
			switch {
			case strings.HasPrefix(first, "Please enter your "):
				name := strings.TrimPrefix(first, "Please enter your ")
				answer, ok := answers[name]
				if name == "password" {
					answer, ok = password, true
				}
				if !ok {
					t.Fatalf("the bot asks for %q, which the login dialogue should not need:\n%s", name, body)
				}
				asked[name] = true
				if _, err := cli.SendText(ctx, dm.RoomID, answer); err != nil {
					t.Fatal(err)
				}
			case strings.Contains(body, "Logged in as "+aliceAddr):
				return body, true
			case strings.HasPrefix(body, "Failed") || strings.HasPrefix(body, "Invalid") ||
				strings.HasPrefix(body, "Login failed") || strings.Contains(body, "Unknown command"):
				return body, false
			default:
				t.Logf("bot says: %s", body)
			}
		}
	}
	// A wrong password gets a clear answer, and never echoes the password.
	const wrongPass = "not the password"
	if reply, ok := loginDialogue(wrongPass); ok {
		t.Fatalf("login with a wrong password succeeded: %s", reply)
	} else if !strings.Contains(strings.ToLower(reply), "authentication failed") || strings.Contains(reply, wrongPass) {
		t.Errorf("reply to a wrong password: %q, want a clear \"authentication failed\" without the password", reply)
	}
	if reply, ok := loginDialogue(alicePass); !ok {
		t.Fatalf("login refused: %s", reply)
	}
	// The messages that carried passwords are redacted: the room history no longer holds them.
	dmCounts := countBodies(t, cli, dm.RoomID, alicePass, wrongPass, aliceAddr)
	for _, text := range []string{alicePass, wrongPass} {
		if n := dmCounts[text]; n != 0 {
			t.Errorf("the DM history still holds the password %q in %d message(s)", text, n)
		}
	}
	if dmCounts[aliceAddr] < 2 { // control: the history is readable and holds the other answers
		t.Errorf("the DM history holds the address %d times, want at least the two answers", dmCounts[aliceAddr])
	}

	// The provider drops the bridge's IMAP connection: it must reconnect and lose nothing.
	time.Sleep(500 * time.Millisecond) // let the mailbox loop log in and start IDLE first
	ms.Kick(t, aliceAddr)

	// Mail arrives from outside: it becomes a portal room the user is invited to, with the message in it.
	firstID := "<lunch-" + tag + "@remote.test>"
	ms.Deliver(t, carolAddr, []string{aliceAddr}, rawMail(map[string]string{
		"From": "Carol Outside <" + carolAddr + ">", "To": "Alice <" + aliceAddr + ">",
		"Subject": "Lunch on Friday?", "Message-ID": firstID,
	}, "Shall we meet at noon?\r\nCarol\r\n"))
	portal, invite := s.wait("an invite to the thread's portal room", func(r id.RoomID, e *event.Event) bool {
		return r != dm.RoomID && e.Type == event.StateMember && e.GetStateKey() == cli.UserID.String() &&
			e.Content.AsMember().Membership == event.MembershipInvite
	})
	t.Logf("invited to %s by %s", portal, invite.Sender)
	if _, err := cli.JoinRoomByID(ctx, portal); err != nil {
		t.Fatalf("join portal: %v", err)
	}
	_, msg := s.wait("the mail in the portal room", func(r id.RoomID, e *event.Event) bool {
		return r == portal && e.Type == event.EventMessage &&
			strings.Contains(e.Content.AsMessage().Body, "Shall we meet at noon?")
	})
	ghost := msg.Sender
	if ghost == cli.UserID || ghost == bot || !strings.HasPrefix(ghost.Localpart(), "email_") {
		t.Errorf("the mail was sent by %s, want a ghost user for %s", ghost, carolAddr)
	}
	// The ghost is named from the From header.
	if resp, err := cli.GetDisplayName(ctx, ghost); err != nil || resp.DisplayName != "Carol Outside" {
		t.Errorf("ghost %s display name = %+v, %v; want \"Carol Outside\" from the From header", ghost, resp, err)
	}

	// The user answers from Matrix: the reply reaches Carol's mailbox, threaded.
	if _, err := cli.SendText(ctx, portal, "Noon works for me."); err != nil {
		t.Fatal(err)
	}
	got := ms.WaitMessages(t, carolAddr, carolPass, "INBOX", 1, waitTimeout)
	reply := parseMail(t, got[0])
	replyID := reply.header("Message-ID")
	checkReply(t, reply, aliceAddr, carolAddr, "Re: Lunch on Friday?", "Noon works for me.", firstID)

	// A copy of the reply is in the user's Sent folder, with the same Message-ID.
	sent := ms.WaitMessages(t, aliceAddr, alicePass, "Sent", 1, waitTimeout)
	if id := parseMail(t, sent[0]).header("Message-ID"); id != replyID {
		t.Errorf("Sent copy has Message-ID %q, the delivered reply %q", id, replyID)
	}

	// Restart the hub, with mail arriving while it is down: nothing is lost or bridged twice, and the thread
	// goes on in the same room.
	h.stop(t)
	// The answer is a typical client's mail: text and HTML alternatives (the HTML with a script that must not
	// survive) and an image attachment that must arrive as Matrix media.
	png := testPNG(t)
	ms.Deliver(t, carolAddr, []string{aliceAddr}, rawMultipartMail(map[string]string{
		"From": "Carol Outside <" + carolAddr + ">", "To": "Alice <" + aliceAddr + ">",
		"Subject": "Re: Lunch on Friday?", "Message-ID": "<lunch2-" + tag + "@remote.test>",
		"In-Reply-To": replyID, "References": firstID + " " + replyID,
	}, "See you there.\r\n", `<p>See you <b>there</b>.</p><script>alert("x")</script>`, "map.png", png))
	ms.WaitMessages(t, aliceAddr, alicePass, "INBOX", 2, waitTimeout) // delivered while the hub is down
	h = startHub(t, cfg, h.addr)
	room, answer := s.wait("the second mail of the thread", func(r id.RoomID, e *event.Event) bool {
		return e.Type == event.EventMessage && strings.Contains(e.Content.AsMessage().Body, "See you there.")
	})
	if room != portal {
		t.Errorf("the thread's second mail went to %s, want the thread's portal %s", room, portal)
	}
	if html := answer.Content.AsMessage().FormattedBody; strings.Contains(strings.ToLower(html), "<script") {
		t.Errorf("the HTML body was not sanitised: %s", html)
	}
	_, img := s.wait("the attachment of the second mail", func(r id.RoomID, e *event.Event) bool {
		if r != portal || e.Type != event.EventMessage {
			return false
		}
		m := e.Content.AsMessage()
		return m.MsgType == event.MsgImage || m.MsgType == event.MsgFile
	})
	if m := img.Content.AsMessage(); m.MsgType != event.MsgImage || (m.FileName != "map.png" && m.Body != "map.png") {
		t.Errorf("attachment arrived as %s %q / %q, want m.image map.png", m.MsgType, m.Body, m.FileName)
	} else if mxc, err := m.URL.Parse(); err != nil {
		t.Errorf("attachment URL %q: %v", m.URL, err)
	} else if data, err := cli.DownloadBytes(ctx, mxc); err != nil {
		t.Errorf("download %s: %v", mxc, err)
	} else if !bytes.Equal(data, png) {
		t.Errorf("downloaded attachment differs from the mailed one (%d vs %d bytes)", len(data), len(png))
	}
	// Give a duplicate the time it would need to show up, then count.
	time.Sleep(3 * time.Second)
	s.syncOnce(0)
	counts := countBodies(t, cli, portal, "Shall we meet at noon?", "Noon works for me.", "See you there.")
	for body, n := range counts {
		if n != 1 {
			t.Errorf("%q is %d times in the portal room, want once", body, n)
		}
	}
	if got := ms.Messages(t, carolAddr, carolPass, "INBOX"); len(got) != 1 {
		t.Errorf("Carol received %d mails, want the one reply (a restart must not resend it)", len(got))
	}
	for _, e := range s.all {
		if e.room != portal && e.room != dm.RoomID && e.evt.Type == event.StateMember &&
			e.evt.GetStateKey() == cli.UserID.String() && e.evt.Content.AsMember().Membership == event.MembershipInvite {
			t.Errorf("invited to a second room %s: the thread was split", e.room)
		}
	}
}

// checkReply checks the mail the bridge sent for a Matrix reply.
func checkReply(t *testing.T, m *parsedMail, from, to, subject, body, parentID string) {
	t.Helper()
	if a, err := mail.ParseAddress(m.header("From")); err != nil || !strings.EqualFold(a.Address, from) {
		t.Errorf("From %q, want %s", m.header("From"), from)
	}
	if !strings.Contains(strings.ToLower(m.header("To")+","+m.header("Cc")), strings.ToLower(to)) {
		t.Errorf("To %q / Cc %q do not include %s", m.header("To"), m.header("Cc"), to)
	}
	if got := m.header("Subject"); got != subject {
		t.Errorf("Subject %q, want %q (exactly one \"Re: \")", got, subject)
	}
	if got := m.header("In-Reply-To"); got != parentID {
		t.Errorf("In-Reply-To %q, want %q", got, parentID)
	}
	if refs := strings.Fields(m.header("References")); len(refs) == 0 || refs[len(refs)-1] != parentID {
		t.Errorf("References %q, want it to end with %s", m.header("References"), parentID)
	}
	if mid := m.header("Message-ID"); !strings.HasPrefix(mid, "<") || !strings.HasSuffix(mid, ">") || !strings.Contains(mid, "@") {
		t.Errorf("Message-ID %q is not <id@domain>", mid)
	}
	if m.header("Date") == "" {
		t.Error("no Date header")
	}
	if !strings.Contains(m.text, body) {
		t.Errorf("body %q does not contain %q", m.text, body)
	}
}

// hubRun is a hub serving on a local port.
type hubRun struct {
	*hub.Hub
	addr   string
	url    string
	cancel context.CancelFunc
	done   chan error
}

// startHub starts a hub with cfg on addr ("" = a free port) and waits until it is ready.
func startHub(t *testing.T, cfg *configs.Config, addr string) *hubRun {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	cfg.Server.Listen = addr
	cfg.Server.PublicBaseURL = "http://" + addr
	if err := cfg.Validate(); err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	h, err := hub.New(ctx, cfg, testLogger(t))
	if err != nil {
		cancel()
		_ = ln.Close()
		t.Fatalf("hub.New: %v", err)
	}
	r := &hubRun{Hub: h, addr: addr, url: "http://" + addr, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- h.Serve(ctx, ln) }()
	select {
	case <-h.Ready():
	case err := <-r.done:
		cancel()
		t.Fatalf("hub stopped while starting: %v", err)
	case <-time.After(waitTimeout):
		cancel()
		t.Fatal("hub not ready")
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the hub's context, as SIGTERM does, and waits for it to finish.
func (r *hubRun) stop(t *testing.T) {
	t.Helper()
	if r.done == nil {
		return
	}
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("hub stopped with %v", err)
		}
	case <-time.After(waitTimeout):
		t.Error("hub did not stop")
	}
	r.done = nil
}

// testLogger logs warnings to the test log, or everything at info with -v.
func testLogger(t *testing.T) zerolog.Logger {
	level := zerolog.WarnLevel
	if testing.Verbose() {
		level = zerolog.InfoLevel
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(level).With().Timestamp().Logger()
}

// seen is one event from /sync with its room.
type seen struct {
	room    id.RoomID
	evt     *event.Event
	matched bool
}

// syncer follows /sync for one client and keeps every event, so a wait can match one that arrived earlier.
type syncer struct {
	t     *testing.T
	cli   *mautrix.Client
	since string
	all   []*seen
}

func newSyncer(t *testing.T, cli *mautrix.Client) *syncer {
	s := &syncer{t: t, cli: cli}
	s.syncOnce(0)
	return s
}

// syncOnce does one /sync (long-polling up to timeoutMS) and records its events.
func (s *syncer) syncOnce(timeoutMS int) {
	s.t.Helper()
	resp, err := s.cli.SyncRequest(s.t.Context(), timeoutMS, s.since, "", false, event.PresenceOnline)
	if err != nil {
		s.t.Fatalf("sync: %v", err)
	}
	s.since = resp.NextBatch
	add := func(room id.RoomID, evts []*event.Event) {
		for _, e := range evts {
			if e.RoomID == "" {
				e.RoomID = room
			}
			_ = e.Content.ParseRaw(e.Type)
			s.all = append(s.all, &seen{room: room, evt: e})
		}
	}
	for room, r := range resp.Rooms.Invite {
		add(room, r.State.Events)
	}
	for room, r := range resp.Rooms.Join {
		add(room, r.State.Events)
		add(room, r.Timeline.Events)
	}
	for room, r := range resp.Rooms.Leave {
		add(room, r.Timeline.Events)
	}
}

// wait returns the first not yet matched event satisfying match, syncing until it arrives.
func (s *syncer) wait(what string, match func(id.RoomID, *event.Event) bool) (id.RoomID, *event.Event) {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, e := range s.all {
			if !e.matched && match(e.room, e.evt) {
				e.matched = true
				return e.room, e.evt
			}
		}
		if time.Now().After(deadline) {
			var last []string
			for _, e := range s.all[max(0, len(s.all)-15):] {
				last = append(last, fmt.Sprintf("%s %s %s %s", e.room, e.evt.Sender, e.evt.Type.Type, string(e.evt.Content.VeryRaw)))
			}
			// What the server has, as opposed to what /sync delivered, tells a sync bug from a bridge bug.
			rooms := map[id.RoomID]bool{}
			for _, e := range s.all[max(0, len(s.all)-15):] {
				rooms[e.room] = true
			}
			for room := range rooms {
				resp, err := s.cli.Messages(s.t.Context(), room, "", "", mautrix.DirectionBackward, nil, 30)
				if err != nil {
					last = append(last, fmt.Sprintf("/messages %s: %v", room, err))
					continue
				}
				last = append(last, fmt.Sprintf("/messages %s (newest first):", room))
				for _, e := range resp.Chunk {
					last = append(last, fmt.Sprintf("  %s %s %s", e.Sender, e.Type.Type, string(e.Content.VeryRaw)))
				}
			}
			s.t.Fatalf("waited %s for %s; last events from /sync:\n%s", waitTimeout, what, strings.Join(last, "\n"))
		}
		s.syncOnce(2000)
	}
}

// countBodies pages through a room's history and counts the messages whose body contains each text.
func countBodies(t *testing.T, cli *mautrix.Client, room id.RoomID, texts ...string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, text := range texts {
		counts[text] = 0
	}
	from := ""
	for range 50 {
		resp, err := cli.Messages(t.Context(), room, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		for _, e := range resp.Chunk {
			if e.Type != event.EventMessage {
				continue
			}
			_ = e.Content.ParseRaw(e.Type)
			for _, text := range texts {
				if strings.Contains(e.Content.AsMessage().Body, text) {
					counts[text]++
				}
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			return counts
		}
		from = resp.End
	}
	t.Fatal("room history does not end")
	return nil
}

// rawMail builds an RFC 5322 text/plain message with CRLF line endings.
func rawMail(headers map[string]string, body string) []byte {
	var b bytes.Buffer
	for _, k := range []string{"From", "To", "Subject", "Message-ID", "In-Reply-To", "References"} {
		if v, ok := headers[k]; ok {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(&b, "Date: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Content-Transfer-Encoding: 8bit\r\n\r\n%s", time.Now().Format(time.RFC1123Z), body)
	return b.Bytes()
}

// parsedMail is a received message's headers and text.
type parsedMail struct {
	env  *enmime.Envelope
	text string
}

func (m *parsedMail) header(name string) string { return strings.TrimSpace(m.env.GetHeader(name)) }

func parseMail(t *testing.T, raw []byte) *parsedMail {
	t.Helper()
	env, err := enmime.ReadEnvelope(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse mail: %v\n%s", err, raw)
	}
	return &parsedMail{env: env, text: env.Text}
}

// rawMultipartMail builds a multipart/mixed message: text and HTML alternatives, then one PNG attachment.
func rawMultipartMail(headers map[string]string, text, html, filename string, png []byte) []byte {
	var b bytes.Buffer
	for _, k := range []string{"From", "To", "Subject", "Message-ID", "In-Reply-To", "References"} {
		if v, ok := headers[k]; ok {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(&b, "Date: %s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mixed-b\"\r\n\r\n",
		time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "--mixed-b\r\nContent-Type: multipart/alternative; boundary=\"alt-b\"\r\n\r\n")
	fmt.Fprintf(&b, "--alt-b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", text)
	fmt.Fprintf(&b, "--alt-b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n%s\r\n--alt-b--\r\n", html)
	fmt.Fprintf(&b, "--mixed-b\r\nContent-Type: image/png; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\n"+
		"Content-Transfer-Encoding: base64\r\n\r\n", filename, filename)
	enc := base64.StdEncoding.EncodeToString(png)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--mixed-b--\r\n")
	return b.Bytes()
}

// testPNG is a small real PNG image.
func testPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 8, 6))
	for x := range 8 {
		for y := range 6 {
			img.Set(x, y, color.RGBA{R: uint8(30 * x), G: uint8(40 * y), B: 200, A: 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
