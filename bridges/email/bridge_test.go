package email

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/bridgeconfig"
	"maunium.net/go/mautrix/bridgev2/commands"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/bridgev2/status"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/bridges/email/msgconv"
	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/internal/testenv"
)

type testBridge struct {
	br   *bridgev2.Bridge
	conn *Connector
	fm   *fakeMatrix
	db   *dbutil.Database
}

// startTestBridge runs bridgev2 with this connector and a fake Matrix side on a bridge database that survives
// "restarts" (a second startTestBridge on the same file).
func startTestBridge(t *testing.T, dbc dbConn, dataDir string) *testBridge {
	t.Helper()
	db := dbc.open(t)
	cfg := configs.Default().Bridges.Email
	cfg.AllowInsecure = true
	cfg.IdleTimeout = 30 * time.Second
	conn := NewConnector(cfg)
	conn.SetDataDir(dataDir)
	conn.maxBackoff = 300 * time.Millisecond
	conn.commandTimeout = 5 * time.Second
	fm := newFakeMatrix()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	br := bridgev2.NewBridge("email", db, log, &bridgeconfig.BridgeConfig{CommandPrefix: "!email", PortalEventBuffer: 64},
		fm, conn, func(br *bridgev2.Bridge) bridgev2.CommandProcessor { return commands.NewProcessor(br) })
	if err := br.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	tb := &testBridge{br: br, conn: conn, fm: fm, db: db}
	t.Cleanup(tb.stop)
	return tb
}

func (tb *testBridge) stop() {
	if tb.br == nil {
		return
	}
	tb.br.StopWithTimeout(10 * time.Second)
	tb.br = nil
}

// dbConn names a bridge database that can be opened more than once (to simulate a restart).
type dbConn struct{ driver, uri string }

func (d dbConn) open(t *testing.T) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewWithDialect(d.uri, d.driver)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestBridgeMailThreadsToPortalsAndBack drives the connector through bridgev2 against real Dovecot and Postfix:
// login through the flow, mail becomes portal rooms (one per thread) with the user invited and ghosts as
// senders, a malformed mail does not stop the mailbox, a Matrix reply goes out threaded, and after a "crash"
// that lost the sync position plus a restart nothing is bridged twice.
func TestBridgeMailThreadsToPortalsAndBack(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		testBridgeRoundTrip(t, dbConn{"sqlite3-fk-wal", "file:" + filepath.Join(t.TempDir(), "bridge-email.db") + "?_txlock=immediate"})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		testBridgeRoundTrip(t, dbConn{"pgx", testenv.Postgres(t)})
	})
}

func testBridgeRoundTrip(t *testing.T, dbc dbConn) {
	ms := testenv.Mail(t)
	acct := newMailbox(t, ms)
	bob := "bob." + strings.Split(acct.Address, "@")[0] + "@" + testenv.OtherDomain
	ms.AddAddress(t, bob, "bobpw")
	carol := "carol." + strings.Split(acct.Address, "@")[0] + "@" + testenv.OtherDomain
	ms.AddAddress(t, carol, "carolpw")
	dir := t.TempDir()
	tb := startTestBridge(t, dbc, dir)
	ctx := t.Context()
	const alice = id.UserID("@alice:localhost")

	// Log in through the flow, as the bot would.
	user, err := tb.br.GetUserByMXID(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := tb.conn.CreateLogin(ctx, user, LoginFlowID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	uip := lp.(bridgev2.LoginProcessUserInput)
	if _, err := uip.SubmitUserInput(ctx, map[string]string{fieldEmail: acct.Address}); err != nil {
		t.Fatal(err)
	}
	step, err := uip.SubmitUserInput(ctx, loginInput(ms, acct.Address, acct.Password))
	if err != nil {
		t.Fatal(err)
	}
	if step.Type != bridgev2.LoginStepTypeDisplayAndWait || !strings.Contains(step.Instructions, "Checking") {
		t.Fatalf("step after the settings %+v, want a display-and-wait step saying the servers are being checked", step)
	}
	step, err = lp.(bridgev2.LoginProcessDisplayAndWait).Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if step.Type != bridgev2.LoginStepTypeComplete || step.CompleteParams.UserLoginID != networkid.UserLoginID(acct.Address) {
		t.Fatalf("final step %+v", step)
	}
	// The password is stored sealed: not in the database in clear text.
	var rawMeta string
	if err := tb.db.QueryRow(ctx, "SELECT metadata FROM user_login WHERE id=$1", acct.Address).Scan(&rawMeta); err != nil {
		t.Fatal(err)
	}
	var stored UserLoginMetadata
	if err := json.Unmarshal([]byte(rawMeta), &stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rawMeta, acct.Password) || !strings.HasPrefix(stored.SealedPassword, sealedPrefix) {
		t.Fatalf("user_login metadata does not hold a sealed password: %s", rawMeta)
	}
	if !tb.fm.waitFor(20*time.Second, func() bool {
		return slices.ContainsFunc(tb.fm.states, func(s status.BridgeState) bool { return s.StateEvent == status.StateConnected })
	}) {
		t.Fatalf("login never reported CONNECTED: %+v", tb.fm.states)
	}

	// A new thread from Bob. The homeserver refuses the first room creation: the mail is retried, not lost.
	tb.fm.mu.Lock()
	tb.fm.failCreate = 1
	tb.fm.mu.Unlock()
	m1 := testMail(bob, acct.Address, "Lunch on Friday?", "m1@remote.test", "Cc: Carol <"+carol+">")
	m1 = []byte(strings.Replace(string(m1), "From: Outside Person", "From: Bob Example", 1))
	ms.Deliver(t, bob, []string{acct.Address}, m1)
	var room id.RoomID
	if !tb.fm.waitFor(20*time.Second, func() bool {
		r := tb.fm.roomNamed("Lunch on Friday?")
		if r == nil || len(tb.fm.roomMessages(r.ID)) == 0 {
			return false
		}
		room = r.ID
		return true
	}) {
		for _, r := range tb.fm.rooms {
			t.Logf("room %+v", *r)
		}
		for _, m := range tb.fm.msgs {
			t.Logf("msg %+v %+v", m, m.Content)
		}
		t.Fatal("no portal room with the thread subject")
	}
	bobGhost := tb.fm.FormatGhostMXID(networkid.UserID(bob))
	tb.fm.mu.Lock()
	r := tb.fm.rooms[room]
	if !slices.Contains(r.Invited, alice) {
		t.Errorf("user not invited to the portal: invited %v", r.Invited)
	}
	msgs := tb.fm.roomMessages(room)
	if tb.fm.failCreate != 0 || len(tb.fm.rooms) != 1 || len(msgs) != 1 {
		t.Errorf("after a failed room creation: %d rooms, %d messages, %d failures left; want 1, 1, 0",
			len(tb.fm.rooms), len(msgs), tb.fm.failCreate)
	}
	if msgs[0].Sender != bobGhost || !strings.Contains(msgs[0].Content.Body, "Hello from m1@remote.test") {
		t.Errorf("first message %+v from %s, want Bob's ghost %s with the body", msgs[0].Content, msgs[0].Sender, bobGhost)
	}
	if msgs[0].TS.IsZero() || time.Since(msgs[0].TS) > time.Minute {
		t.Errorf("message timestamp %v, want the mail's Date", msgs[0].TS)
	}
	if name := tb.fm.names[bobGhost]; name != "Bob Example" {
		t.Errorf("Bob's ghost is named %q, want the From display name", name)
	}
	tb.fm.mu.Unlock()

	// Carol answers in the thread: same room.
	m2 := testMail(carol, acct.Address, "Re: Lunch on Friday?", "m2@remote.test",
		"In-Reply-To: <m1@remote.test>", "References: <m1@remote.test>", "Cc: <"+bob+">")
	ms.Deliver(t, carol, []string{acct.Address}, m2)
	if !tb.fm.waitFor(20*time.Second, func() bool { return len(tb.fm.roomMessages(room)) >= 2 }) {
		t.Fatal("reply was not bridged into the thread's room")
	}
	// A malformed mail (multipart without its boundary) is bridged as far as possible, and the next mail still
	// arrives.
	bad := "From: <" + bob + ">\r\nTo: <" + acct.Address + ">\r\nSubject: Broken\r\nMessage-ID: <bad@remote.test>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"nope\"\r\n\r\nsome text with no parts at all\r\n"
	ms.Deliver(t, bob, []string{acct.Address}, []byte(bad))
	ms.Deliver(t, bob, []string{acct.Address}, testMail(bob, acct.Address, "After the broken one", "m4@remote.test"))
	if !tb.fm.waitFor(20*time.Second, func() bool { return tb.fm.roomNamed("After the broken one") != nil }) {
		t.Fatal("mail after a malformed one was not bridged")
	}
	// (Postfix may have queued the two in either order.)
	if !tb.fm.waitFor(20*time.Second, func() bool {
		r := tb.fm.roomNamed("Broken")
		return r != nil && len(tb.fm.roomMessages(r.ID)) > 0 && strings.Contains(tb.fm.roomMessages(r.ID)[0].Content.Body, "some text")
	}) {
		t.Error("the malformed mail was not bridged, or lost its text")
	}
	// A mail whose From is unreadable is still posted by a correspondent ghost, never by the bridge bot.
	garbled := "From: garbage <<<>>>\r\nTo: <" + acct.Address + ">\r\nSubject: Garbled sender\r\n" +
		"Message-ID: <garbled@remote.test>\r\n\r\nwho sent this?\r\n"
	ms.Deliver(t, bob, []string{acct.Address}, []byte(garbled))
	var garbledMsg fakeMsg
	if !tb.fm.waitFor(20*time.Second, func() bool {
		r := tb.fm.roomNamed("Garbled sender")
		if r == nil || len(tb.fm.roomMessages(r.ID)) == 0 {
			return false
		}
		garbledMsg = tb.fm.roomMessages(r.ID)[0]
		return true
	}) {
		t.Fatal("the mail with an unreadable From was not bridged")
	}
	if ghostID, ok := tb.fm.ParseGhostMXID(garbledMsg.Sender); !ok || ghostID == "" {
		t.Errorf("the mail with an unreadable From was posted by %s, want a correspondent ghost", garbledMsg.Sender)
	} else {
		t.Logf("unreadable From posted by the ghost %q", ghostID)
	}

	// The user answers from Matrix.
	portal, err := tb.br.GetExistingPortalByKey(ctx, networkid.PortalKey{ID: "m1@remote.test", Receiver: networkid.UserLoginID(acct.Address)})
	if err != nil || portal == nil {
		t.Fatalf("portal of the thread: %v %v", portal, err)
	}
	login := tb.br.GetCachedUserLoginByID(networkid.UserLoginID(acct.Address))
	tb.fm.mu.Lock()
	tb.fm.memberNames[alice] = "Alice Liddell"
	tb.fm.mu.Unlock()
	evt := &event.Event{ID: "$matrix-reply-1", RoomID: room, Sender: alice, Timestamp: time.Now().UnixMilli(), Type: event.EventMessage}
	resp, err := login.Client.HandleMatrixMessage(ctx, &bridgev2.MatrixMessage{MatrixEventBase: bridgev2.MatrixEventBase[*event.MessageEventContent]{
		Event: evt, Content: &event.MessageEventContent{MsgType: event.MsgText, Body: "Friday works for me."}, Portal: portal}})
	if err != nil {
		t.Fatal(err)
	}
	wantID := msgconv.MessageIDFor(evt.ID, domainOf(acct.Address))
	if string(resp.DB.ID) != wantID {
		t.Fatalf("remote message ID %q, want %q", resp.DB.ID, wantID)
	}
	for _, who := range []struct{ addr, pw string }{{carol, "carolpw"}, {bob, "bobpw"}} {
		got := ms.WaitMessages(t, who.addr, who.pw, "INBOX", 1, 15*time.Second)[0]
		if v := headerValue(got, "In-Reply-To"); v != "<m2@remote.test>" {
			t.Errorf("%s: In-Reply-To %q", who.addr, v)
		}
		if v := strings.Join(strings.Fields(headerValue(got, "References")), " "); v != "<m1@remote.test> <m2@remote.test>" {
			t.Errorf("%s: References %q", who.addr, v)
		}
		if v := headerValue(got, "Subject"); v != "Re: Lunch on Friday?" {
			t.Errorf("%s: Subject %q", who.addr, v)
		}
		// The From header carries the Matrix sender's display name with the login's address.
		if v := headerValue(got, "From"); v != `"Alice Liddell" <`+acct.Address+">" && v != "Alice Liddell <"+acct.Address+">" {
			t.Errorf("%s: From %q, want Alice's display name and %s", who.addr, v, acct.Address)
		}
	}
	if sent := ms.WaitMessages(t, acct.Address, acct.Password, "Sent", 1, 10*time.Second); headerValue(sent[0], "Message-ID") != "<"+wantID+">" {
		t.Errorf("Sent copy has Message-ID %q", headerValue(sent[0], "Message-ID"))
	}

	// An attachment from Matrix goes out as a MIME part.
	tb.fm.mu.Lock()
	tb.fm.media["mxc://localhost/notes"] = []byte("minutes of the meeting\n")
	tb.fm.mu.Unlock()
	fileEvt := &event.Event{ID: "$matrix-file-1", RoomID: room, Sender: alice, Timestamp: time.Now().UnixMilli(), Type: event.EventMessage}
	if _, err := login.Client.HandleMatrixMessage(ctx, &bridgev2.MatrixMessage{MatrixEventBase: bridgev2.MatrixEventBase[*event.MessageEventContent]{
		Event: fileEvt, Portal: portal, Content: &event.MessageEventContent{MsgType: event.MsgFile, Body: "notes.txt", FileName: "notes.txt",
			URL: "mxc://localhost/notes", Info: &event.FileInfo{MimeType: "text/plain", Size: 23}}}}); err != nil {
		t.Fatal(err)
	}
	withFile := ms.WaitMessages(t, bob, "bobpw", "INBOX", 2, 15*time.Second)[1]
	parsed, err := msgconv.Parse(strings.NewReader(string(withFile)), msgconv.ParseOptions{})
	if err != nil || len(parsed.Attachments) != 1 || parsed.Attachments[0].Filename != "notes.txt" ||
		string(parsed.Attachments[0].Data) != "minutes of the meeting\n" {
		t.Fatalf("mail with the Matrix file: %+v, %v", parsed, err)
	}
	if v := headerValue(withFile, "In-Reply-To"); v != "<"+wantID+">" {
		t.Errorf("second reply In-Reply-To %q, want the first reply %q", v, wantID)
	}

	// An attachment from email is uploaded as Matrix media.
	attMail := "From: Bob Example <" + bob + ">\r\nTo: <" + acct.Address + ">\r\nSubject: Re: Lunch on Friday?\r\n" +
		"Message-ID: <att@remote.test>\r\nIn-Reply-To: <m2@remote.test>\r\nReferences: <m1@remote.test> <m2@remote.test>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe menu is attached.\r\n" +
		"--b1\r\nContent-Type: application/pdf; name=\"menu.pdf\"\r\nContent-Disposition: attachment; filename=\"menu.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcTl8uXr\r\n--b1--\r\n"
	ms.Deliver(t, bob, []string{acct.Address}, []byte(attMail))
	if !tb.fm.waitFor(20*time.Second, func() bool {
		for _, m := range tb.fm.roomMessages(room) {
			if m.Content != nil && m.Content.MsgType == event.MsgFile && m.Content.URL != "" {
				return string(tb.fm.media[m.Content.URL]) == "%PDF-1.4\n%\xc4\xe5\xf2\xe5\xeb"
			}
		}
		return false
	}) {
		t.Fatal("the PDF attachment was not uploaded and sent as m.file in the thread's room")
	}

	// "Crash" that lost the sync position, then restart: every mail is fetched again, none is bridged twice.
	tb.fm.mu.Lock()
	before := len(tb.fm.msgs)
	tb.fm.mu.Unlock()
	tb.stop()
	st, err := NewStore(ctx, dbc.open(t), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	pos, _, _ := st.LoadState(ctx, acct.Address, "INBOX")
	pos.LastUID = 0
	if err := st.SaveState(ctx, acct.Address, "INBOX", pos); err != nil {
		t.Fatal(err)
	}
	tb2 := startTestBridge(t, dbc, dir)
	ms.Deliver(t, bob, []string{acct.Address}, testMail(bob, acct.Address, "Re: Lunch on Friday?", "m5@remote.test",
		"In-Reply-To: <m2@remote.test>", "References: <m1@remote.test> <m2@remote.test>"))
	// m5 lands in the original thread's room (restored from the database, so the fake has no record of it).
	if !tb2.fm.waitFor(30*time.Second, func() bool { return len(tb2.fm.roomMessages(room)) >= 1 }) {
		t.Fatalf("mail after restart not bridged into the old room; messages %+v", tb2.fm.msgs)
	}
	// All six mails in INBOX were handed to bridgev2 again (m1, m2, the broken one, m4, the PDF, m5)...
	if !tb2.fm.waitFor(10*time.Second, func() bool { return tb2.conn.mailsHandled.Load() >= 6 }) {
		t.Fatalf("after losing the sync position only %d mails were refetched, want 6", tb2.conn.mailsHandled.Load())
	}
	time.Sleep(500 * time.Millisecond) // let any duplicate show up
	// ...and only the new one was bridged.
	tb2.fm.mu.Lock()
	defer tb2.fm.mu.Unlock()
	var bodies []string
	for _, m := range tb2.fm.msgs {
		if m.Type == event.EventMessage && m.Content != nil && m.Sender != "@email:localhost" {
			bodies = append(bodies, m.Content.Body)
		}
	}
	if len(bodies) != 1 || !strings.Contains(bodies[0], "m5@remote.test") {
		t.Fatalf("after restart bridged %d messages %q, want only m5 (before restart: %d)", len(bodies), bodies, before)
	}
}

// TestHelpHidesUnsupportedCommandsAndGreetingReadsRight: `help` from a user who has not logged in yet lists
// login but none of the commands the email bridge cannot do, which still answer (not "Unknown command");
// and the bot's greeting ("Hello, I'm a <name> bridge bot.") reads right.
func TestHelpHidesUnsupportedCommandsAndGreetingReadsRight(t *testing.T) {
	t.Parallel()
	tb := startTestBridge(t, dbConn{"sqlite3-fk-wal", "file:" + filepath.Join(t.TempDir(), "bridge-email.db") + "?_txlock=immediate"}, t.TempDir())
	ctx := t.Context()
	user, err := tb.br.GetUserByMXID(ctx, "@bob:localhost")
	if err != nil {
		t.Fatal(err)
	}
	const room = id.RoomID("!mgmt:localhost")
	reply := func(cmd string) string {
		t.Helper()
		before := len(tb.fm.roomMessages(room))
		tb.br.Commands.Handle(ctx, room, "$cmd", user, cmd, "")
		var body string
		if !tb.fm.waitFor(5*time.Second, func() bool {
			msgs := tb.fm.roomMessages(room)
			if len(msgs) > before {
				body = msgs[len(msgs)-1].Content.Body
				return true
			}
			return false
		}) {
			t.Fatalf("no reply to %q", cmd)
		}
		return body
	}
	help := reply("help")
	if !strings.Contains(help, "**login**") {
		t.Fatalf("help does not list login:\n%s", help)
	}
	for _, cmd := range []string{"search", "start-chat", "resolve-identifier", "create-group", "set-profile", "mute", "block-user", "delete-chat"} {
		if strings.Contains(help, "**"+cmd+"**") {
			t.Errorf("help lists %s, which the email bridge does not support:\n%s", cmd, help)
		}
	}
	if got := reply("search alice"); !strings.Contains(got, "does not support") && !strings.Contains(got, "requires you to be logged in") {
		t.Errorf("search answered %q", got)
	}
	name := tb.conn.GetName().DisplayName
	if strings.ContainsRune("AEIOUaeiou", rune(name[0])) {
		t.Errorf("greeting would read %q", "Hello, I'm a "+name+" bridge bot.")
	}
}
