package email

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/bridges/email/msgconv"
	"github.com/passerelle/passerelle/configs"
)

// TestResolveThread checks the thread → portal mapping against bridgev2's real message table: a known
// message in References/In-Reply-To wins, else the thread root named by References, else (no threading
// headers at all) a reply-style subject joins the newest thread with that base subject, else a new thread.
func TestResolveThread(t *testing.T) {
	t.Parallel()
	withAllDatabases(t, func(t *testing.T, raw *dbutil.Database) {
		ctx := t.Context()
		c := NewConnector(configs.Default().Bridges.Email)
		bdb := database.New("email", c.GetDBMetaTypes(), raw)
		if err := bdb.Upgrade(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := NewStore(ctx, raw, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		c.store = st
		c.br = &bridgev2.Bridge{DB: bdb}
		const login = networkid.UserLoginID("alice@example.test")
		cl := &Client{conn: c, login: &bridgev2.UserLogin{UserLogin: &database.UserLogin{ID: login}}}

		portal := networkid.PortalKey{ID: "root-0@remote.test", Receiver: login}
		if err := bdb.Portal.Insert(ctx, &database.Portal{BridgeID: "email", PortalKey: portal, MXID: "!p:localhost",
			Metadata: &PortalMetadata{}}); err != nil {
			t.Fatal(err)
		}
		if err := bdb.Ghost.Insert(ctx, &database.Ghost{BridgeID: "email", ID: "bob@remote.test", Metadata: &struct{}{}}); err != nil {
			t.Fatal(err)
		}
		if err := bdb.Message.Insert(ctx, &database.Message{BridgeID: "email", ID: "mid-5@remote.test", MXID: id.EventID("$e5"),
			Room: portal, SenderID: "bob@remote.test", Timestamp: time.Now(), Metadata: &struct{}{}}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetThreadSubject(ctx, string(login), "Quarterly report", "report-root@remote.test"); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name string
			e    msgconv.Email
			want networkid.PortalID
		}{
			{"known in-reply-to, truncated references", msgconv.Email{MessageID: "n1@x", InReplyTo: []string{"mid-5@remote.test"},
				References: []string{"other-root@x", "mid-5@remote.test"}}, "root-0@remote.test"},
			{"unknown references use the root", msgconv.Email{MessageID: "n2@x", References: []string{"r0@x", "r1@x"}, InReplyTo: []string{"r1@x"}}, "r0@x"},
			{"only in-reply-to", msgconv.Email{MessageID: "n3@x", InReplyTo: []string{"ir@x"}}, "ir@x"},
			{"subject fallback for a reply without headers", msgconv.Email{MessageID: "n4@x", Subject: "AW: Re: Quarterly report"}, "report-root@remote.test"},
			{"same subject without reply prefix is a new thread", msgconv.Email{MessageID: "n5@x", Subject: "Quarterly report"}, "n5@x"},
			{"new thread", msgconv.Email{MessageID: "n6@x", Subject: "Hello"}, "n6@x"},
			{"already bridged message stays in its room", msgconv.Email{MessageID: "mid-5@remote.test", Subject: "Hello"}, "root-0@remote.test"},
		}
		for _, tc := range cases {
			got, err := cl.resolveThread(ctx, &tc.e, tc.e.MessageID)
			if err != nil || got != tc.want {
				t.Errorf("%s: resolveThread = %q, %v; want %q", tc.name, got, err, tc.want)
			}
		}
	})
}

func TestThreadStateAndRecipients(t *testing.T) {
	t.Parallel()
	meta := &PortalMetadata{}
	first := &msgconv.Email{MessageID: "m1@x", Subject: "Re: Plans", From: msgconv.Address{Name: "Bob", Email: "bob@x"},
		To: []msgconv.Address{{Email: "Alice@Example.test"}}, Cc: []msgconv.Address{{Name: "Carol", Email: "carol@x"}}}
	meta.observe(first, "m1@x", true)
	if meta.Subject != "Plans" || meta.LastMessageID != "m1@x" || strings.Join(meta.References, " ") != "m1@x" {
		t.Fatalf("after first mail: %+v", meta)
	}
	to, cc := meta.recipients("alice@example.test")
	if len(to) != 1 || to[0].Email != "bob@x" || len(cc) != 1 || cc[0].Email != "carol@x" {
		t.Fatalf("recipients to=%v cc=%v", to, cc)
	}
	// Reply-To wins over From; a synthesised id is never quoted.
	second := &msgconv.Email{Subject: "Re: Plans", From: msgconv.Address{Email: "carol@x"}, ReplyTo: []msgconv.Address{{Email: "list@x"}},
		To: []msgconv.Address{{Email: "alice@example.test"}}}
	meta.observe(second, "synth-abc@passerelle.invalid", false)
	if meta.LastMessageID != "m1@x" {
		t.Fatalf("synthesised id leaked into threading: %+v", meta)
	}
	to, cc = meta.recipients("ALICE@example.test")
	if len(to) != 1 || to[0].Email != "list@x" || len(cc) != 2 {
		t.Fatalf("recipients to=%v cc=%v", to, cc)
	}
	for _, a := range append(to, cc...) {
		if strings.EqualFold(a.Email, "alice@example.test") {
			t.Fatal("the user is among the recipients of their own reply")
		}
	}
	// A thread with nobody else has no recipients.
	lonely := &PortalMetadata{Participants: []Participant{{Address: "alice@example.test"}}, ReplyTo: []Participant{{Address: "alice@example.test"}}}
	if _, err := buildReply(&Account{Address: "alice@example.test"}, lonely, "$e", 0, "x", ""); err != ErrNoRecipients {
		t.Fatalf("lonely thread: %v", err)
	}
	// References are capped to the root plus the newest ids.
	var refs []string
	for i := range 50 {
		refs = append(refs, string(rune('a'+i%26))+"@x")
	}
	capped := capReferences(refs)
	if len(capped) != maxReferences || capped[0] != refs[0] || capped[len(capped)-1] != refs[49] {
		t.Fatalf("capReferences: %d %v", len(capped), capped)
	}
}
