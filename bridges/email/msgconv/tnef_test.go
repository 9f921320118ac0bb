package msgconv

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unicode/utf16"
)

// tnefBuilder writes TNEF streams for tests.
type tnefBuilder struct{ b bytes.Buffer }

func newTNEF() *tnefBuilder {
	t := &tnefBuilder{}
	_ = binary.Write(&t.b, binary.LittleEndian, uint32(tnefSignature))
	_ = binary.Write(&t.b, binary.LittleEndian, uint16(1))
	return t
}

func (t *tnefBuilder) attr(level byte, typ, tag uint16, data []byte) *tnefBuilder {
	t.b.WriteByte(level)
	_ = binary.Write(&t.b, binary.LittleEndian, uint32(typ)<<16|uint32(tag))
	_ = binary.Write(&t.b, binary.LittleEndian, uint32(len(data)))
	t.b.Write(data)
	var sum uint16
	for _, c := range data {
		sum += uint16(c)
	}
	_ = binary.Write(&t.b, binary.LittleEndian, sum)
	return t
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func utf16z(s string) []byte {
	var out []byte
	for _, u := range utf16.Encode([]rune(s + "\x00")) {
		out = binary.LittleEndian.AppendUint16(out, u)
	}
	return out
}

// mapiProps builds an attAttachment property list: a named property and a
// long to step over, then the long file name and the MIME tag.
func mapiProps(longName, mimeTag string) []byte {
	var b []byte
	b = append(b, le32(4)...)
	// named property (ID 0x8001, kind 1 = string name), type PT_LONG
	b = binary.LittleEndian.AppendUint16(b, 0x0003)
	b = binary.LittleEndian.AppendUint16(b, 0x8001)
	b = append(b, make([]byte, 16)...) // GUID
	b = append(b, le32(1)...)
	name := utf16z("x-name")
	b = append(b, le32(uint32(len(name)))...)
	b = append(b, pad4(name)...)
	b = append(b, le32(7)...)
	// PT_LONG 0x0E21 (attach number)
	b = binary.LittleEndian.AppendUint16(b, 0x0003)
	b = binary.LittleEndian.AppendUint16(b, 0x0E21)
	b = append(b, le32(1)...)
	// PT_UNICODE long file name
	v := utf16z(longName)
	b = binary.LittleEndian.AppendUint16(b, ptUnicode)
	b = binary.LittleEndian.AppendUint16(b, mapiAttachLongFilename)
	b = append(b, le32(1)...)
	b = append(b, le32(uint32(len(v)))...)
	b = append(b, pad4(v)...)
	// PT_STRING8 MIME tag
	m := append([]byte(mimeTag), 0)
	b = binary.LittleEndian.AppendUint16(b, ptString8)
	b = binary.LittleEndian.AppendUint16(b, mapiAttachMimeTag)
	b = append(b, le32(1)...)
	b = append(b, le32(uint32(len(m)))...)
	b = append(b, pad4(m)...)
	return b
}

func TestTNEFLongFilenameAndBody(t *testing.T) {
	t.Parallel()
	stream := newTNEF().
		attr(tnefLevelMessage, 0x0007, 0x8008, []byte("IPM.Note\x00")).
		attr(tnefLevelMessage, 0x0002, tnefAttBody, []byte("Body text\x00")).
		attr(tnefLevelAttach, 0x0002, tnefAttAttachRend, make([]byte, 14)).
		attr(tnefLevelAttach, 0x0001, tnefAttAttachName, []byte("VERTRA~1.PDF\x00")).
		attr(tnefLevelAttach, 0x0006, tnefAttAttachData, []byte("%PDF-1.4")).
		attr(tnefLevelAttach, 0x0006, tnefAttAttachment, mapiProps("Vertrag äöü.pdf", "application/pdf")).
		attr(tnefLevelAttach, 0x0002, tnefAttAttachRend, make([]byte, 14)).
		attr(tnefLevelAttach, 0x0001, tnefAttAttachName, []byte("notes.txt\x00")).
		attr(tnefLevelAttach, 0x0006, tnefAttAttachData, []byte("n")).
		attr(tnefLevelAttach, 0x0002, tnefAttAttachRend, make([]byte, 14)). // no data: left out
		b.Bytes()
	atts, body, err := parseTNEF(stream)
	if err != nil {
		t.Fatal(err)
	}
	if body != "Body text" {
		t.Errorf("body = %q", body)
	}
	if len(atts) != 2 {
		t.Fatalf("attachments = %+v", atts)
	}
	if atts[0].Filename != "Vertrag äöü.pdf" || atts[0].ContentType != "application/pdf" || string(atts[0].Data) != "%PDF-1.4" {
		t.Errorf("first = %+v", atts[0])
	}
	if atts[1].Filename != "notes.txt" || atts[1].ContentType != "text/plain" || string(atts[1].Data) != "n" {
		t.Errorf("second = %+v", atts[1])
	}
	// Truncated streams keep what was complete.
	atts, _, err = parseTNEF(stream[:len(stream)-30])
	if err == nil || len(atts) != 1 {
		t.Errorf("truncated: %d attachments, err %v", len(atts), err)
	}
	if _, _, err := parseTNEF([]byte("not tnef")); err == nil {
		t.Error("accepted a non-TNEF stream")
	}
}

func FuzzMAPIProps(f *testing.F) {
	f.Add(mapiProps("a.pdf", "application/pdf"))
	f.Add([]byte{1, 0, 0, 0, 0x1f, 0, 0x07, 0x37, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range mapiStrings(b) {
			if len(v) > 3*len(b) {
				t.Fatalf("value longer than input")
			}
		}
	})
}
