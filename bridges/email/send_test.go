package email

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/passerelle/passerelle/bridges/email/msgconv"
	"github.com/passerelle/passerelle/internal/testenv"
)

// TestReplyThreadingOverRealServers: an outside correspondent writes (as a reply inside an existing thread), the
// user answers from Matrix; the answer reaches the correspondent over Postfix with correct threading headers
// and a single "Re: ", a copy lands in the user's Sent folder, and a retried send keeps the same Message-ID
// without a second Sent copy.
func TestReplyThreadingOverRealServers(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	alice := newMailbox(t, ms)
	bob := "bob-" + strings.ReplaceAll(alice.Address, "@", ".") + "@" + testenv.OtherDomain
	ms.AddAddress(t, bob, "bobpw")
	carol := "carol@" + testenv.OtherDomain
	ms.AddAddress(t, carol, "carolpw")

	incoming := testMail(bob, alice.Address, "RE: Fwd: Lunch plans", "in-2@remote.test",
		"Cc: Carol <"+carol+">",
		"In-Reply-To: <in-1@remote.test>",
		"References: <root-0@remote.test> <in-1@remote.test>")
	ms.Deliver(t, bob, []string{alice.Address}, incoming)
	raw := ms.WaitMessages(t, alice.Address, alice.Password, "INBOX", 1, 10*time.Second)[0]
	e, err := msgconv.Parse(bytes.NewReader(raw), msgconv.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	meta := &PortalMetadata{}
	meta.observe(e, e.MessageID, true)
	if meta.Subject != "Lunch plans" {
		t.Fatalf("thread subject %q", meta.Subject)
	}

	const evt = id.EventID("$reply-event-1:localhost")
	out, err := buildReply(alice, meta, evt, 1767225600000, "Noon works.", "<p>Noon <b>works</b>.</p>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deliverReply(t.Context(), alice, true, out); err != nil {
		t.Fatal(err)
	}
	got := ms.WaitMessages(t, bob, "bobpw", "INBOX", 1, 10*time.Second)[0]
	wantID := "<" + msgconv.MessageIDFor(evt, domainOf(alice.Address)) + ">"
	checks := map[string]string{
		"Subject":     "Re: Lunch plans",
		"In-Reply-To": "<in-2@remote.test>",
		"References":  "<root-0@remote.test> <in-1@remote.test> <in-2@remote.test>",
		"Message-ID":  wantID,
	}
	for h, want := range checks {
		if v := strings.Join(strings.Fields(headerValue(got, h)), " "); v != want {
			t.Errorf("%s: %q, want %q", h, v, want)
		}
	}
	if from := headerValue(got, "From"); !strings.Contains(from, alice.Address) {
		t.Errorf("From %q", from)
	}
	if to := headerValue(got, "To"); !strings.Contains(to, bob) || strings.Contains(to, alice.Address) {
		t.Errorf("To %q: want the sender, not the user", to)
	}
	if cc := headerValue(got, "Cc"); !strings.Contains(cc, carol) || strings.Contains(cc, alice.Address) {
		t.Errorf("Cc %q: want the other participant, not the user", cc)
	}
	// Carol got it too.
	ms.WaitMessages(t, carol, "carolpw", "INBOX", 1, 10*time.Second)
	parsed, err := msgconv.Parse(bytes.NewReader(got), msgconv.ParseOptions{})
	if err != nil || !strings.Contains(parsed.Text, "Noon works.") || !strings.Contains(parsed.HTML, "<b>works</b>") {
		t.Fatalf("reply body: text %q html %q err %v", parsed.Text, parsed.HTML, err)
	}

	sent := ms.WaitMessages(t, alice.Address, alice.Password, "Sent", 1, 10*time.Second)
	if len(sent) != 1 || headerValue(sent[0], "Message-ID") != wantID {
		t.Fatalf("Sent folder holds %d messages, want the reply", len(sent))
	}

	// A retry of the same Matrix event: same Message-ID, and no second Sent copy.
	out2, err := buildReply(alice, meta, evt, 1767225600000, "Noon works.", "<p>Noon <b>works</b>.</p>")
	if err != nil {
		t.Fatal(err)
	}
	if out2.MessageID != out.MessageID {
		t.Fatalf("retry Message-ID %q != %q", out2.MessageID, out.MessageID)
	}
	if _, err := deliverReply(t.Context(), alice, true, out2); err != nil {
		t.Fatal(err)
	}
	again := ms.WaitMessages(t, bob, "bobpw", "INBOX", 2, 10*time.Second)
	if headerValue(again[1], "Message-ID") != wantID {
		t.Fatalf("retried mail has Message-ID %q", headerValue(again[1], "Message-ID"))
	}
	if sent := ms.Messages(t, alice.Address, alice.Password, "Sent"); len(sent) != 1 {
		t.Fatalf("Sent folder holds %d copies after a retry, want 1", len(sent))
	}

	// The user's reply becomes the thread's newest message for the next reply.
	meta.observeSent(out.MessageID)
	next, _ := buildReply(alice, meta, "$reply-event-2:localhost", 0, "And dessert?", "")
	if next.InReplyTo != out.MessageID || next.References[len(next.References)-1] != out.MessageID || next.Subject != "Re: Lunch plans" {
		t.Fatalf("next reply threading: %+v", next)
	}
}

// TestSendMailRefusals: a refused login and an empty recipient list are errors, never a silent "sent".
func TestSendMailRefusals(t *testing.T) {
	t.Parallel()
	ms := testenv.Mail(t)
	alice := newMailbox(t, ms)
	raw := testMail(alice.Address, "x@remote.test", "Hi", "r-1@example.test")
	noAuth := *alice
	noAuth.Password = "wrong"
	err := SendMail(t.Context(), &noAuth, true, alice.Address, []string{"x@remote.test"}, raw)
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("send with a wrong password: %v, want ErrAuthFailed", err)
	}
	if err := SendMail(t.Context(), alice, true, alice.Address, nil, raw); err == nil {
		t.Fatal("send without recipients succeeded")
	}
}
