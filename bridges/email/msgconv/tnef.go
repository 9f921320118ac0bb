package msgconv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// TNEF (Transport Neutral Encapsulation Format, Outlook's winmail.dat) is a
// sequence of attributes after a signature and a key:
//
//	level (1 byte) | id (uint32 LE: type<<16 | tag) | length (uint32 LE) | data | checksum (uint16 LE)
//
// Level 1 attributes describe the message, level 2 the attachment that the
// last attAttachRenddata started. Only the parts the bridge shows are read:
// attachment titles and data, and the plain text body.
const (
	tnefSignature     = 0x223E9F78
	tnefLevelMessage  = 1
	tnefLevelAttach   = 2
	tnefAttBody       = 0x800C
	tnefAttAttachData = 0x800F
	tnefAttAttachName = 0x8010
	tnefAttAttachRend = 0x9002
	// maxTNEFAttachments bounds the work on a hostile winmail.dat.
	maxTNEFAttachments = 100
)

var errNotTNEF = errors.New("not a TNEF stream")

// parseTNEF unpacks the files and the plain text body of a winmail.dat.
func parseTNEF(b []byte) ([]Attachment, string, error) {
	if len(b) < 6 || binary.LittleEndian.Uint32(b) != tnefSignature {
		return nil, "", errNotTNEF
	}
	pos := 6
	var atts []Attachment
	var body string
	cur := -1
	for pos < len(b) {
		if len(b)-pos < 9 {
			return atts, body, fmt.Errorf("truncated attribute at offset %d", pos)
		}
		level := b[pos]
		attID := binary.LittleEndian.Uint32(b[pos+1:])
		n := binary.LittleEndian.Uint32(b[pos+5:])
		pos += 9
		if uint64(n)+2 > uint64(len(b)-pos) {
			return atts, body, fmt.Errorf("attribute at offset %d longer than the stream", pos-9)
		}
		data := b[pos : pos+int(n)]
		pos += int(n) + 2 // data and checksum (not verified: senders get it wrong)
		tag := attID & 0xFFFF
		switch {
		case level == tnefLevelMessage && tag == tnefAttBody:
			body = strings.TrimSpace(strings.ToValidUTF8(string(bytes.TrimRight(data, "\x00")), "\uFFFD"))
		case level == tnefLevelAttach && tag == tnefAttAttachRend:
			if len(atts) >= maxTNEFAttachments {
				return atts, body, fmt.Errorf("more than %d attachments", maxTNEFAttachments)
			}
			atts = append(atts, Attachment{ContentType: "application/octet-stream"})
			cur = len(atts) - 1
		case level == tnefLevelAttach && tag == tnefAttAttachName && cur >= 0:
			name, _ := toUTF8("windows-1252", bytes.TrimRight(data, "\x00"))
			atts[cur].Filename = cleanFilename(name)
		case level == tnefLevelAttach && tag == tnefAttAttachData && cur >= 0:
			atts[cur].Data = append([]byte(nil), data...)
		}
	}
	out := atts[:0]
	for _, a := range atts {
		if a.Data == nil {
			continue
		}
		if a.Filename == "" {
			a.Filename = "attachment"
		}
		a.ContentType = contentTypeByName(a.Filename)
		out = append(out, a)
	}
	return out, body, nil
}
