package msgconv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
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
	tnefAttAttachment = 0x9005 // MAPI properties of the attachment
	// MAPI property IDs read from attAttachment.
	mapiAttachLongFilename = 0x3707
	mapiAttachMimeTag      = 0x370E
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
	var err error
	for pos < len(b) && err == nil {
		if len(b)-pos < 9 {
			err = fmt.Errorf("truncated attribute at offset %d", pos)
			break
		}
		level := b[pos]
		attID := binary.LittleEndian.Uint32(b[pos+1:])
		n := binary.LittleEndian.Uint32(b[pos+5:])
		pos += 9
		if uint64(n)+2 > uint64(len(b)-pos) {
			err = fmt.Errorf("attribute at offset %d longer than the stream", pos-9)
			break
		}
		data := b[pos : pos+int(n)]
		pos += int(n) + 2 // data and checksum (not verified: senders get it wrong)
		tag := attID & 0xFFFF
		switch {
		case level == tnefLevelMessage && tag == tnefAttBody:
			body = strings.TrimSpace(strings.ToValidUTF8(string(bytes.TrimRight(data, "\x00")), "\uFFFD"))
		case level == tnefLevelAttach && tag == tnefAttAttachRend:
			if len(atts) >= maxTNEFAttachments {
				err = fmt.Errorf("more than %d attachments", maxTNEFAttachments)
				break
			}
			atts = append(atts, Attachment{})
			cur = len(atts) - 1
		case level == tnefLevelAttach && tag == tnefAttAttachName && cur >= 0:
			name, _ := toUTF8("windows-1252", bytes.TrimRight(data, "\x00"))
			atts[cur].Filename = cleanFilename(name)
		case level == tnefLevelAttach && tag == tnefAttAttachData && cur >= 0:
			atts[cur].Data = append([]byte(nil), data...)
		case level == tnefLevelAttach && tag == tnefAttAttachment && cur >= 0:
			props := mapiStrings(data)
			if name := cleanFilename(props[mapiAttachLongFilename]); name != "" {
				atts[cur].Filename = name
			}
			if mt := strings.ToLower(strings.TrimSpace(props[mapiAttachMimeTag])); tokenRe.MatchString(mt) {
				atts[cur].ContentType = mt
			}
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
		if a.ContentType == "" || a.ContentType == "application/octet-stream" {
			a.ContentType = contentTypeByName(a.Filename)
		}
		out = append(out, a)
	}
	return out, body, err
}

// MAPI property types (MS-OXCDATA 2.11.1) that mapiStrings must step over.
const (
	ptString8 = 0x001E
	ptUnicode = 0x001F
	ptBinary  = 0x0102
	ptObject  = 0x000D
	ptMV      = 0x1000
)

// mapiFixedSize is the encoded size of fixed-length property types in TNEF
// (values are padded to 4 bytes).
func mapiFixedSize(t uint16) int {
	switch t {
	case 0x0002, 0x0003, 0x0004, 0x000A, 0x000B: // short, long, float, error, boolean
		return 4
	case 0x0005, 0x0006, 0x0007, 0x0014, 0x0040: // double, currency, apptime, int64, systime
		return 8
	case 0x0048: // CLSID
		return 16
	case 0x0001: // null
		return 0
	}
	return -1
}

// mapiStrings reads a TNEF MAPI property list and returns its single-valued
// string properties by ID. It stops at the first thing it cannot step over.
func mapiStrings(b []byte) map[uint16]string {
	out := map[uint16]string{}
	if len(b) < 4 {
		return out
	}
	count := binary.LittleEndian.Uint32(b)
	pos := 4
	need := func(n int) bool { return n >= 0 && len(b)-pos >= n }
	for i := uint32(0); i < count && i < 10000; i++ {
		if !need(4) {
			return out
		}
		typ := binary.LittleEndian.Uint16(b[pos:])
		pid := binary.LittleEndian.Uint16(b[pos+2:])
		pos += 4
		if pid >= 0x8000 { // named property: GUID, kind, then an ID or a name
			if !need(20) {
				return out
			}
			kind := binary.LittleEndian.Uint32(b[pos+16:])
			pos += 20
			if kind == 0 {
				if !need(4) {
					return out
				}
				pos += 4
			} else {
				if !need(4) {
					return out
				}
				n := int(binary.LittleEndian.Uint32(b[pos:]))
				pos += 4
				n = (n + 3) &^ 3
				if !need(n) {
					return out
				}
				pos += n
			}
		}
		values := 1
		base := typ &^ ptMV
		variable := base == ptString8 || base == ptUnicode || base == ptBinary || base == ptObject
		if typ&ptMV != 0 || variable {
			if !need(4) {
				return out
			}
			values = int(binary.LittleEndian.Uint32(b[pos:]))
			pos += 4
			if values < 0 || values > 10000 {
				return out
			}
		}
		for v := 0; v < values; v++ {
			if !variable {
				size := mapiFixedSize(base)
				if size < 0 || !need(size) {
					return out
				}
				pos += size
				continue
			}
			if !need(4) {
				return out
			}
			n := int(binary.LittleEndian.Uint32(b[pos:]))
			pos += 4
			if n < 0 || !need(n) {
				return out
			}
			val := b[pos : pos+n]
			if padded := (n + 3) &^ 3; need(padded) {
				pos += padded
			} else {
				pos += n
			}
			if values == 1 && typ&ptMV == 0 {
				switch base {
				case ptString8:
					s, _ := toUTF8("windows-1252", bytes.TrimRight(val, "\x00"))
					out[pid] = s
				case ptUnicode:
					out[pid] = strings.TrimRight(decodeUTF16LE(val), "\x00")
				}
			}
		}
	}
	return out
}

// decodeUTF16LE decodes little-endian UTF-16 leniently.
func decodeUTF16LE(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, binary.LittleEndian.Uint16(b[i:]))
	}
	return strings.ToValidUTF8(string(utf16.Decode(u)), "\uFFFD")
}
