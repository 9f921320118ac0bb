package msgconv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"image"
	_ "image/gif"  // image.DecodeConfig for GIF dimensions
	_ "image/jpeg" // image.DecodeConfig for JPEG dimensions
	_ "image/png"  // image.DecodeConfig for PNG dimensions
	"mime"
	"path"
	"regexp"
	"strings"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Upload stores one file as Matrix media and returns its mxc:// URI. It is
// called once per attachment that ToMatrix keeps.
type Upload func(ctx context.Context, data []byte, fileName, mimeType string) (id.ContentURIString, error)

// MatrixOptions tunes ToMatrixWith.
type MatrixOptions struct {
	// SubjectLine puts the subject in bold at the top of the text part; the
	// connector sets it for the first message of a thread.
	SubjectLine bool
	// MaxBodyBytes cuts the text part so the event stays under Matrix's
	// 64 KiB event limit; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int
}

// DefaultMaxBodyBytes bounds body plus formatted_body, measured as JSON
// (escaping included), leaving room under the 65536 byte limit the Matrix
// specification puts on a whole event for the rest of the event.
const DefaultMaxBodyBytes = 48 * 1024

// Part IDs used in the converted message; stable so edits and redactions can
// address the parts.
const (
	// PartText is the ID of the text part (the default part in bridgev2).
	PartText networkid.PartID = ""
	// PartDropped is the ID of the notice listing attachments not bridged.
	PartDropped networkid.PartID = "dropped"
)

// AttachmentPartID is the part ID of the i-th attachment.
func AttachmentPartID(i int) networkid.PartID {
	return networkid.PartID(fmt.Sprintf("att-%d", i))
}

// ToMatrix converts e with the default MatrixOptions.
func ToMatrix(ctx context.Context, e *Email, upload Upload) (*bridgev2.ConvertedMessage, error) {
	return ToMatrixWith(ctx, e, upload, MatrixOptions{})
}

var cidSrcRe = regexp.MustCompile(`^cid:(.+)$`)

// ToMatrixWith converts e into Matrix message parts: one text part
// (m.notice for automatic mail, else m.text) with body and sanitised
// formatted_body, one media part (m.image, m.video, m.audio or m.file) per
// attachment, and a final m.notice naming every attachment that was dropped
// or could not be uploaded, so nothing vanishes silently. Inline images
// referenced by cid: in the HTML are shown in the formatted body instead of
// as separate parts. The error is non-nil only when ctx is done.
func ToMatrixWith(ctx context.Context, e *Email, upload Upload, opts MatrixOptions) (*bridgev2.ConvertedMessage, error) {
	maxBody := opts.MaxBodyBytes
	if maxBody <= 0 {
		maxBody = DefaultMaxBodyBytes
	}
	var notes []string
	uploaded := map[int]id.ContentURIString{}
	uploadOne := func(i int) (id.ContentURIString, error) {
		if uri, ok := uploaded[i]; ok {
			return uri, nil
		}
		a := &e.Attachments[i]
		uri, err := upload(ctx, a.Data, a.Filename, a.ContentType)
		if err != nil {
			return "", err
		}
		uploaded[i] = uri
		return uri, nil
	}
	failed := map[int]bool{}

	// Inline images first: their URIs go into the HTML.
	formatted := e.HTML
	usedInline := map[int]bool{}
	if formatted != "" {
		formatted = rewriteImages(formatted, func(src string) (string, bool) {
			if mxcRe.MatchString(src) {
				return src, true
			}
			m := cidSrcRe.FindStringSubmatch(src)
			if m == nil {
				return "", false
			}
			cid := strings.Trim(m[1], "<>")
			for i := range e.Attachments {
				a := &e.Attachments[i]
				if a.ContentID == "" || !strings.EqualFold(a.ContentID, cid) || a.Data == nil || failed[i] {
					continue
				}
				uri, err := uploadOne(i)
				if err != nil {
					failed[i] = true
					return "", false
				}
				usedInline[i] = true
				return string(uri), true
			}
			return "", false
		})
		formatted = SanitizeHTML(formatted)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	out := &bridgev2.ConvertedMessage{}
	text := e.Text
	if text == "" && formatted != "" {
		text = HTMLToText(formatted)
	}
	subject := strings.TrimSpace(e.Subject)
	if opts.SubjectLine && subject != "" {
		if formatted == "" && text != "" {
			formatted = textToHTML(text)
		}
		text = subject + "\n\n" + text
		if formatted != "" {
			formatted = "<p><strong>" + html.EscapeString(subject) + "</strong></p>" + formatted
		}
		text = strings.TrimSpace(text)
	}
	text, formatted = limitBody(text, formatted, maxBody)
	hasFiles := false
	for i, a := range e.Attachments {
		if a.Dropped == "" && a.Data != nil && !usedInline[i] {
			hasFiles = true
		}
	}
	if text != "" || formatted != "" || !hasFiles {
		if text == "" {
			text = "(empty message)"
		}
		content := &event.MessageEventContent{MsgType: event.MsgText, Body: text}
		if e.AutoSubmitted {
			content.MsgType = event.MsgNotice
		}
		if formatted != "" && formatted != html.EscapeString(text) {
			content.Format = event.FormatHTML
			content.FormattedBody = formatted
		}
		out.Parts = append(out.Parts, &bridgev2.ConvertedMessagePart{ID: PartText, Type: event.EventMessage, Content: content})
	}

	for i := range e.Attachments {
		a := &e.Attachments[i]
		if usedInline[i] {
			continue
		}
		if a.Dropped != "" || a.Data == nil {
			reason := a.Dropped
			if reason == "" {
				reason = "no content"
			}
			notes = append(notes, fmt.Sprintf("%s (%s): %s", a.Filename, humanSize(a.Size), reason))
			continue
		}
		if failed[i] {
			notes = append(notes, fmt.Sprintf("%s (%s): upload failed", a.Filename, humanSize(a.Size)))
			continue
		}
		uri, err := uploadOne(i)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			notes = append(notes, fmt.Sprintf("%s (%s): upload failed: %v", a.Filename, humanSize(a.Size), err))
			continue
		}
		out.Parts = append(out.Parts, &bridgev2.ConvertedMessagePart{
			ID:      AttachmentPartID(i),
			Type:    event.EventMessage,
			Content: mediaContent(a, uri),
		})
	}
	if len(notes) > 0 {
		body := "Not bridged from this email:\n- " + strings.Join(notes, "\n- ")
		var fb strings.Builder
		fb.WriteString("Not bridged from this email:<ul>")
		for _, n := range notes {
			fb.WriteString("<li>" + html.EscapeString(n) + "</li>")
		}
		fb.WriteString("</ul>")
		out.Parts = append(out.Parts, &bridgev2.ConvertedMessagePart{
			ID:   PartDropped,
			Type: event.EventMessage,
			Content: &event.MessageEventContent{
				MsgType: event.MsgNotice, Body: body,
				Format: event.FormatHTML, FormattedBody: fb.String(),
			},
		})
	}
	return out, nil
}

// mediaContent builds the content of one media part.
func mediaContent(a *Attachment, uri id.ContentURIString) *event.MessageEventContent {
	ct := a.ContentType
	if ct == "" || ct == "application/octet-stream" {
		ct = contentTypeByName(a.Filename)
	}
	msgType := event.MsgFile
	switch {
	case strings.HasPrefix(ct, "image/"):
		msgType = event.MsgImage
	case strings.HasPrefix(ct, "video/"):
		msgType = event.MsgVideo
	case strings.HasPrefix(ct, "audio/"):
		msgType = event.MsgAudio
	}
	info := &event.FileInfo{MimeType: ct, Size: int(a.Size)}
	if msgType == event.MsgImage {
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(a.Data)); err == nil {
			info.Width, info.Height = cfg.Width, cfg.Height
		}
	}
	return &event.MessageEventContent{
		MsgType:  msgType,
		Body:     a.Filename,
		FileName: a.Filename,
		URL:      uri,
		Info:     info,
	}
}

// contentTypeByName guesses a media type from a file name.
func contentTypeByName(name string) string {
	if t := mime.TypeByExtension(strings.ToLower(path.Ext(name))); t != "" {
		if mt, _, err := mime.ParseMediaType(t); err == nil {
			return mt
		}
	}
	return "application/octet-stream"
}

// textToHTML renders plain text as HTML with line breaks kept.
func textToHTML(s string) string {
	return strings.ReplaceAll(html.EscapeString(s), "\n", "<br>")
}

// jsonLen is the size of s as a JSON string.
func jsonLen(s string) int {
	b, _ := json.Marshal(s)
	return len(b)
}

// limitBody cuts text and formatted body so the event stays small. An HTML
// body that does not fit is dropped (cutting HTML could break it) and a text
// body that does not fit is cut with a note.
func limitBody(text, formatted string, max int) (string, string) {
	const note = "\n\n[… message shortened]"
	if jsonLen(text)+jsonLen(formatted) <= max {
		return text, formatted
	}
	if jsonLen(text) <= max {
		return text, ""
	}
	cut := max
	for cut > 0 {
		t := truncate(text, cut) + note
		if jsonLen(t) <= max {
			return t, ""
		}
		cut = cut * 3 / 4
	}
	return strings.TrimPrefix(note, "\n\n"), ""
}

// replyFallbackRe matches the <mx-reply> block Matrix clients prepend to
// replies' formatted_body.
var replyFallbackRe = regexp.MustCompile(`(?is)<mx-reply>.*?</mx-reply>`)

// FromMatrix turns a Matrix message body into email text and HTML. Reply
// fallbacks (the "> <@user> ..." lines and <mx-reply>) are removed, HTML is
// sanitised, and mxc:// images (which mail readers cannot fetch) become
// their alt text. html is "" when the message has no formatted body. For
// media messages only a caption is returned ("" when the body is just the
// file name); the connector attaches the file itself.
func FromMatrix(content *event.MessageEventContent) (text, htmlBody string) {
	if content == nil {
		return "", ""
	}
	text = content.Body
	isReply := content.RelatesTo.GetReplyTo() != ""
	if isReply || strings.HasPrefix(text, "> <") {
		text = stripTextFallback(text)
	}
	if content.MsgType.IsMedia() {
		if content.FileName == "" || content.FileName == content.Body {
			text = ""
		}
	}
	if content.Format == event.FormatHTML && content.FormattedBody != "" && (!content.MsgType.IsMedia() || text != "") {
		h := replyFallbackRe.ReplaceAllString(content.FormattedBody, "")
		h = rewriteImages(h, func(string) (string, bool) { return "", false })
		htmlBody = SanitizeHTML(h)
	}
	if content.MsgType == event.MsgEmote {
		text = "* " + text
		if htmlBody != "" {
			htmlBody = "* " + htmlBody
		}
	}
	return text, htmlBody
}

// stripTextFallback removes the leading quoted lines of a reply fallback
// and the blank line after them.
func stripTextFallback(s string) string {
	lines := strings.Split(s, "\n")
	i := 0
	for i < len(lines) && strings.HasPrefix(lines[i], ">") {
		i++
	}
	if i == 0 {
		return s
	}
	if i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	return strings.Join(lines[i:], "\n")
}
