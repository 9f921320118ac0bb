package email

import (
	"fmt"
	"strings"

	"github.com/passerelle/passerelle/bridges/email/msgconv"
)

// UserLoginMetadata is what the bridge stores per login in bridgev2's user_login table. The password is only
// ever stored sealed (AES-GCM, key file in the data directory).
type UserLoginMetadata struct {
	Address        string   `json:"address"`
	IMAPHost       string   `json:"imap_host"`
	IMAPPort       int      `json:"imap_port"`
	IMAPSecurity   Security `json:"imap_security"`
	SMTPHost       string   `json:"smtp_host"`
	SMTPPort       int      `json:"smtp_port"`
	SMTPSecurity   Security `json:"smtp_security"`
	Username       string   `json:"username"`
	SealedPassword string   `json:"sealed_password"`
}

// account rebuilds the Account, unsealing the password.
func (m *UserLoginMetadata) account(s *Sealer) (*Account, error) {
	pw, err := s.Open(m.SealedPassword)
	if err != nil {
		return nil, fmt.Errorf("unseal password of %s: %w", m.Address, err)
	}
	return &Account{
		Address:  m.Address,
		IMAP:     Server{Host: m.IMAPHost, Port: m.IMAPPort, Security: m.IMAPSecurity},
		SMTP:     Server{Host: m.SMTPHost, Port: m.SMTPPort, Security: m.SMTPSecurity},
		Username: m.Username,
		Password: pw,
	}, nil
}

// PortalMetadata is the thread state kept per portal: enough to write a correctly threaded reply.
type PortalMetadata struct {
	// Subject is the thread's base subject (no Re:/Fwd: prefixes).
	Subject string `json:"subject"`
	// LastMessageID is the newest real Message-ID in the thread (incoming or sent), the next In-Reply-To.
	LastMessageID string `json:"last_message_id,omitempty"`
	// References is the chain for the next reply, oldest first, ending with LastMessageID.
	References []string `json:"references,omitempty"`
	// ReplyTo is where a reply goes first: the Reply-To or From of the newest incoming message.
	ReplyTo []Participant `json:"reply_to,omitempty"`
	// Participants is everyone seen in From/To/Cc of the thread, in order of appearance.
	Participants []Participant `json:"participants,omitempty"`
}

// Participant is one correspondent of a thread.
type Participant struct {
	Name    string `json:"name,omitempty"`
	Address string `json:"address"`
}

// maxReferences caps the References chain of a reply: the root plus the newest ids is what threading needs,
// and some servers refuse very long header lines.
const maxReferences = 20

func capReferences(refs []string) []string {
	if len(refs) <= maxReferences {
		return refs
	}
	out := append([]string{refs[0]}, refs[len(refs)-maxReferences+1:]...)
	return out
}

// addParticipant appends p unless its address is already listed (case-insensitive) or empty.
func addParticipant(list []Participant, a msgconv.Address) []Participant {
	addr := strings.TrimSpace(a.Email)
	if addr == "" {
		return list
	}
	for i, p := range list {
		if strings.EqualFold(p.Address, addr) {
			if p.Name == "" && a.Name != "" {
				list[i].Name = a.Name
			}
			return list
		}
	}
	return append(list, Participant{Name: a.Name, Address: addr})
}

// observe updates the thread state with an incoming message. realID is false for synthesised ids, which must
// not be quoted in In-Reply-To/References of a reply.
func (m *PortalMetadata) observe(e *msgconv.Email, msgID string, realID bool) {
	if m.Subject == "" {
		m.Subject = msgconv.BaseSubject(e.Subject)
	}
	for _, a := range append(append([]msgconv.Address{e.From}, e.To...), e.Cc...) {
		m.Participants = addParticipant(m.Participants, a)
	}
	var replyTo []Participant
	src := e.ReplyTo
	if len(src) == 0 {
		src = []msgconv.Address{e.From}
	}
	for _, a := range src {
		replyTo = addParticipant(replyTo, a)
	}
	if len(replyTo) > 0 {
		m.ReplyTo = replyTo
	}
	if realID {
		refs := e.References
		if len(refs) == 0 {
			refs = e.InReplyTo
		}
		m.References = capReferences(append(append([]string(nil), refs...), msgID))
		m.LastMessageID = msgID
	}
}

// observeSent updates the thread state with a reply the user sent.
func (m *PortalMetadata) observeSent(msgID string) {
	m.References = capReferences(append(append([]string(nil), m.References...), msgID))
	m.LastMessageID = msgID
}

// recipients returns To and Cc for a reply by self: To is the newest message's reply target, Cc everyone else
// in the thread; self never appears. When the reply target is self (the user answers their own message), the
// others move to To.
func (m *PortalMetadata) recipients(self string) (to, cc []msgconv.Address) {
	seen := map[string]bool{strings.ToLower(self): true}
	for _, p := range m.ReplyTo {
		if k := strings.ToLower(p.Address); !seen[k] {
			seen[k] = true
			to = append(to, msgconv.Address{Name: p.Name, Email: p.Address})
		}
	}
	for _, p := range m.Participants {
		if k := strings.ToLower(p.Address); !seen[k] {
			seen[k] = true
			cc = append(cc, msgconv.Address{Name: p.Name, Email: p.Address})
		}
	}
	if len(to) == 0 {
		to, cc = cc, nil
	}
	return to, cc
}
