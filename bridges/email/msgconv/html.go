package msgconv

import (
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/microcosm-cc/bluemonday"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// matrixTags are the elements the Matrix specification lets clients render
// in formatted_body (client-server API, m.room.message, "HTML").
var matrixTags = []string{
	"font", "del", "s", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a",
	"ul", "ol", "sup", "sub", "li", "b", "i", "u", "strong", "em", "strike", "code",
	"hr", "br", "div", "table", "thead", "tbody", "tr", "th", "td", "caption", "pre",
	"span", "img", "details", "summary",
}

var (
	colorRe    = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)
	hrefRe     = regexp.MustCompile(`(?i)^(https?|ftp|mailto|magnet):`)
	mxcRe      = regexp.MustCompile(`^mxc://[^/\s]+/[^/\s]+$`)
	mxcOrCIDRe = regexp.MustCompile(`^(mxc://[^/\s]+/[^/\s]+|cid:\S+)$`)
	langRe     = regexp.MustCompile(`^language-[\w+#-]+$`)
	numberRe   = regexp.MustCompile(`^\d{1,6}$`)
	targetRe   = regexp.MustCompile(`^_(blank|self|parent|top)$`)
	nameRe     = regexp.MustCompile(`^[\w.:-]{1,100}$`)
	spoilerRe  = regexp.MustCompile(`^[^<>"]*$`)
)

// newPolicy builds the Matrix allow-list; imgSrc decides which image sources
// survive.
func newPolicy(imgSrc *regexp.Regexp) *bluemonday.Policy {
	p := bluemonday.NewPolicy()
	p.AllowElements(matrixTags...)
	p.AllowAttrs("data-mx-bg-color", "data-mx-color").Matching(colorRe).OnElements("font", "span")
	p.AllowAttrs("color").Matching(colorRe).OnElements("font")
	p.AllowAttrs("data-mx-spoiler").Matching(spoilerRe).OnElements("span")
	p.AllowAttrs("data-mx-maths").Matching(spoilerRe).OnElements("span", "div")
	p.AllowAttrs("name").Matching(nameRe).OnElements("a")
	p.AllowAttrs("target").Matching(targetRe).OnElements("a")
	p.AllowAttrs("href").Matching(hrefRe).OnElements("a")
	p.AllowAttrs("width", "height").Matching(numberRe).OnElements("img")
	p.AllowAttrs("alt", "title").OnElements("img")
	p.AllowAttrs("src").Matching(imgSrc).OnElements("img")
	p.AllowAttrs("start").Matching(numberRe).OnElements("ol")
	p.AllowAttrs("class").Matching(langRe).OnElements("code")
	p.AllowURLSchemes("http", "https", "ftp", "mailto", "magnet", "mxc", "cid")
	p.RequireParseableURLs(true)
	p.AllowRelativeURLs(false)
	p.SkipElementsContent("script", "style", "head", "title", "template", "noscript", "iframe", "object", "svg", "math")
	return p
}

var (
	policyOnce               sync.Once
	matrixPolicy, mailPolicy *bluemonday.Policy
)

func initPolicies() {
	policyOnce.Do(func() {
		matrixPolicy = newPolicy(mxcRe)
		mailPolicy = newPolicy(mxcOrCIDRe)
	})
}

// strictPolicy is the Matrix allow-list with mxc:// images only.
func strictPolicy() *bluemonday.Policy { initPolicies(); return matrixPolicy }

// parsePolicy also keeps cid: images, rewritten to mxc:// by ToMatrix.
func parsePolicy() *bluemonday.Policy { initPolicies(); return mailPolicy }

// SanitizeHTML reduces s to the HTML subset that the Matrix specification
// allows in formatted_body: its tag and attribute allow-list, links only to
// http(s), ftp, mailto and magnet, images only from mxc:// URIs. Script and
// style content is dropped with its element. Images from elsewhere are
// replaced by their alt text.
func SanitizeHTML(s string) string {
	s = rewriteImages(s, func(src string) (string, bool) {
		return src, mxcRe.MatchString(src)
	})
	return sanitizeWith(strictPolicy(), s)
}

func sanitizeWith(p *bluemonday.Policy, s string) string {
	return strings.TrimSpace(p.Sanitize(s))
}

// rewriteImages parses an HTML fragment and maps each <img src>: keep
// returns the new source, or false to replace the image by its alt text.
func rewriteImages(s string, keep func(src string) (string, bool)) string {
	if !strings.Contains(strings.ToLower(s), "<img") {
		return s
	}
	nodes, err := html.ParseFragment(strings.NewReader(s), &html.Node{Type: html.ElementNode, Data: "div", DataAtom: atom.Div})
	if err != nil {
		return s
	}
	var visit func(n *html.Node)
	visit = func(n *html.Node) {
		for c := n.FirstChild; c != nil; {
			next := c.NextSibling
			if c.Type == html.ElementNode && c.DataAtom == atom.Img {
				src := attr(c, "src")
				if newSrc, ok := keep(src); ok {
					setAttr(c, "src", newSrc)
				} else {
					alt := strings.TrimSpace(attr(c, "alt"))
					if alt != "" {
						n.InsertBefore(&html.Node{Type: html.TextNode, Data: "[" + alt + "]"}, c)
					}
					n.RemoveChild(c)
				}
			} else {
				visit(c)
			}
			c = next
		}
	}
	root := &html.Node{Type: html.ElementNode, Data: "div", DataAtom: atom.Div}
	for _, n := range nodes {
		root.AppendChild(n)
	}
	visit(root)
	return renderChildren(root)
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Namespace == "" && strings.EqualFold(a.Key, key) {
			return a.Val
		}
	}
	return ""
}

func setAttr(n *html.Node, key, val string) {
	for i, a := range n.Attr {
		if a.Namespace == "" && strings.EqualFold(a.Key, key) {
			n.Attr[i].Val = val
			return
		}
	}
	n.Attr = append(n.Attr, html.Attribute{Key: key, Val: val})
}

func hasClass(n *html.Node, class string) bool {
	for _, c := range strings.Fields(attr(n, "class")) {
		if c == class {
			return true
		}
	}
	return false
}

func renderChildren(n *html.Node) string {
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		_ = html.Render(&b, c)
	}
	return b.String()
}

// isQuoteMarker recognises the element where a mail client put the quoted
// history of a reply.
func isQuoteMarker(n *html.Node) bool {
	if n.Type != html.ElementNode {
		return false
	}
	id := attr(n, "id")
	switch {
	case hasClass(n, "gmail_quote"), hasClass(n, "gmail_quote_container"), hasClass(n, "gmail_extra"):
		return true
	case strings.HasSuffix(id, "divRplyFwdMsg"), id == "appendonsend", strings.HasSuffix(id, "mail-editor-reference-message-container"):
		return true // Outlook
	case hasClass(n, "moz-cite-prefix"), hasClass(n, "yahoo_quoted"), hasClass(n, "protonmail_quote"), hasClass(n, "zmail_extra"):
		return true
	case n.DataAtom == atom.Blockquote && strings.EqualFold(attr(n, "type"), "cite"):
		return true // Apple Mail, Thunderbird
	}
	return false
}

// splitQuotedHTML separates an HTML mail into the new text and the quoted
// history: the first quote marker and everything after it in document order.
// When nothing would be left of the new text, the mail is returned whole.
// The results are HTML fragments (the content of <body>).
func splitQuotedHTML(s string) (main, quoted string) {
	doc, err := html.Parse(strings.NewReader(s))
	if err != nil {
		return s, ""
	}
	body := findBody(doc)
	if body == nil {
		return s, ""
	}
	var marker *html.Node
	var find func(n *html.Node)
	find = func(n *html.Node) {
		for c := n.FirstChild; c != nil && marker == nil; c = c.NextSibling {
			if isQuoteMarker(c) {
				marker = c
				return
			}
			find(c)
		}
	}
	find(body)
	if marker == nil {
		return renderChildren(body), ""
	}
	// Detach the marker, its following siblings and the following siblings
	// of each ancestor up to <body>.
	var cut []*html.Node
	for n := marker; n != nil && n != body; n = n.Parent {
		start := n
		if n != marker {
			start = n.NextSibling
		}
		for c := start; c != nil; c = c.NextSibling {
			cut = append(cut, c)
		}
	}
	var q strings.Builder
	type detached struct{ n, parent, next *html.Node }
	var saved []detached
	for _, c := range cut {
		saved = append(saved, detached{c, c.Parent, c.NextSibling})
	}
	for _, c := range cut {
		_ = html.Render(&q, c)
		c.Parent.RemoveChild(c)
	}
	main = renderChildren(body)
	if strings.TrimSpace(HTMLToText(main)) == "" {
		// A pure forward or quote: keep everything as the message.
		for i := len(saved) - 1; i >= 0; i-- {
			d := saved[i]
			d.parent.InsertBefore(d.n, d.next)
		}
		return renderChildren(body), ""
	}
	return main, q.String()
}

func findBody(n *html.Node) *html.Node {
	if n.Type == html.ElementNode && n.DataAtom == atom.Body {
		return n
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if b := findBody(c); b != nil {
			return b
		}
	}
	return nil
}

var (
	attributionRe = regexp.MustCompile(`(?i)^\s*(on\s.+\swrote|am\s.+\sschrieb\s.*|le\s.+\sa\s+écrit|el\s.+\sescribió|op\s.+\sschreef\s.*|den\s.+\sskrev\s.*)\s*:\s*$`)
	separatorRe   = regexp.MustCompile(`(?i)^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|mensaje original|oorspronkelijk bericht|originalmeddelande|forwarded message|weitergeleitete nachricht)\s*-{2,}\s*$`)
	underscoreRe  = regexp.MustCompile(`^\s*_{10,}\s*$`)
	fromLineRe    = regexp.MustCompile(`(?i)^\s*\*?(from|von|de|van|da|från|fra|od)\s*:\*?\s+\S`)
	sentLineRe    = regexp.MustCompile(`(?i)^\s*\*?(sent|gesendet|date|datum|envoyé|enviado|verzonden|skickat|data|wysłane)\s*:\*?\s+\S`)
)

// splitQuotedText separates a plain-text reply from the history it quotes:
// an attribution line ("On ... wrote:"), an Outlook header block or a
// trailing block of "> " lines, and everything after it. Inline replies
// (quotes followed by new text) are left alone.
func splitQuotedText(s string) (main, quoted string) {
	lines := strings.Split(s, "\n")
	cut := -1
	for i := 0; i < len(lines) && cut < 0; i++ {
		l := lines[i]
		switch {
		case attributionRe.MatchString(l):
			cut = i
		case i+1 < len(lines) && strings.TrimSpace(l) != "" && attributionRe.MatchString(l+" "+lines[i+1]):
			cut = i // attribution wrapped over two lines
		case separatorRe.MatchString(l):
			cut = i
		case underscoreRe.MatchString(l) && i+1 < len(lines) && fromLineRe.MatchString(lines[i+1]):
			cut = i
		case fromLineRe.MatchString(l) && i+4 < len(lines) && (i == 0 || strings.TrimSpace(lines[i-1]) == ""):
			for j := i + 1; j <= i+4; j++ {
				if sentLineRe.MatchString(lines[j]) {
					cut = i
					break
				}
			}
		}
	}
	if cut < 0 {
		// A trailing block of quoted lines.
		end := len(lines)
		for end > 0 && strings.TrimSpace(lines[end-1]) == "" {
			end--
		}
		start := end
		for start > 0 && (strings.HasPrefix(lines[start-1], ">") || strings.TrimSpace(lines[start-1]) == "") {
			start--
		}
		if start < end && strings.HasPrefix(lines[end-1], ">") {
			cut = start
		}
	}
	if cut <= 0 {
		return s, ""
	}
	main = strings.TrimSpace(strings.Join(lines[:cut], "\n"))
	if main == "" {
		return s, ""
	}
	return main, strings.TrimSpace(strings.Join(lines[cut:], "\n"))
}

// HTMLToText renders HTML as readable plain text: block elements on their own
// lines, list items with "- " or numbers, links as "text (url)", quotes with
// "> ", scripts and styles dropped, white space collapsed outside <pre>.
func HTMLToText(s string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	nodes, err := html.ParseFragment(strings.NewReader(s), &html.Node{Type: html.ElementNode, Data: "body", DataAtom: atom.Body})
	if err != nil {
		return strings.TrimSpace(s)
	}
	w := &textWriter{}
	for _, n := range nodes {
		w.node(n, 0)
	}
	return w.result()
}

// textWriter accumulates text with collapsed white space.
type textWriter struct {
	b         strings.Builder
	space     bool // a space is due before the next word
	pre       int  // inside <pre>
	newlines  int  // trailing newlines already written
	listDepth int
}

func (w *textWriter) text(s string) {
	if w.pre > 0 {
		w.b.WriteString(s)
		if strings.HasSuffix(s, "\n") {
			w.newlines = 1
		} else if s != "" {
			w.newlines = 0
		}
		return
	}
	if s == "" {
		return
	}
	if isSpaceByte(s[0]) {
		w.space = true
	}
	words := strings.Fields(s)
	for _, word := range words {
		if w.space && w.newlines == 0 && w.b.Len() > 0 {
			w.b.WriteByte(' ')
		}
		w.b.WriteString(word)
		w.newlines = 0
		w.space = true
	}
	w.space = len(words) > 0 && isSpaceByte(s[len(s)-1]) || len(words) == 0 && w.space
}

func isSpaceByte(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

// lines ensures at least n line breaks at the current position.
func (w *textWriter) lines(n int) {
	if w.b.Len() == 0 {
		return
	}
	for w.newlines < n {
		w.b.WriteByte('\n')
		w.newlines++
	}
	w.space = false
}

func (w *textWriter) node(n *html.Node, depth int) {
	if depth > 200 {
		return
	}
	switch n.Type {
	case html.TextNode:
		w.text(n.Data)
		return
	case html.ElementNode:
	case html.DocumentNode:
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			w.node(c, depth+1)
		}
		return
	default:
		return
	}
	children := func() {
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			w.node(c, depth+1)
		}
	}
	switch n.DataAtom {
	case atom.Script, atom.Style, atom.Head, atom.Title, atom.Template, atom.Noscript:
		return
	case atom.Br:
		w.b.WriteByte('\n')
		w.newlines++
		w.space = false
	case atom.Hr:
		w.lines(1)
		w.b.WriteString("---")
		w.newlines = 0
		w.lines(1)
	case atom.P, atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6, atom.Table:
		// Word writes every line as its own <p class="MsoNormal">: those are
		// lines, not paragraphs.
		breaks := 2
		if hasClass(n, "MsoNormal") {
			breaks = 1
		}
		w.lines(breaks)
		children()
		w.lines(breaks)
	case atom.Div, atom.Tr, atom.Section, atom.Article, atom.Header, atom.Footer, atom.Details, atom.Summary, atom.Center, atom.Address, atom.Dd, atom.Dt, atom.Caption:
		w.lines(1)
		children()
		w.lines(1)
	case atom.Ul, atom.Ol:
		w.lines(1)
		w.listDepth++
		num := 0
		if n.DataAtom == atom.Ol {
			num = 1
			if st, err := strconv.Atoi(attr(n, "start")); err == nil {
				num = st
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			if c.Type == html.ElementNode && c.DataAtom == atom.Li {
				w.lines(1)
				w.b.WriteString(strings.Repeat("  ", w.listDepth-1))
				if num > 0 {
					w.b.WriteString(strconv.Itoa(num) + ". ")
					num++
				} else {
					w.b.WriteString("- ")
				}
				w.newlines, w.space = 0, false
				for cc := c.FirstChild; cc != nil; cc = cc.NextSibling {
					w.node(cc, depth+2)
				}
				w.lines(1)
			} else {
				w.node(c, depth+1)
			}
		}
		w.listDepth--
		w.lines(1)
	case atom.Td, atom.Th:
		if n.PrevSibling != nil {
			w.text(" ")
		}
		children()
		w.space = true
	case atom.Pre:
		w.lines(1)
		w.pre++
		children()
		w.pre--
		w.lines(1)
	case atom.Blockquote:
		w.lines(1)
		sub := &textWriter{}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			sub.node(c, depth+1)
		}
		for _, l := range strings.Split(sub.result(), "\n") {
			w.b.WriteString("> " + l)
			w.b.WriteByte('\n')
		}
		w.newlines, w.space = 1, false
	case atom.A:
		before := w.b.Len()
		children()
		href := attr(n, "href")
		label := strings.TrimSpace(w.b.String()[before:])
		target := strings.TrimPrefix(href, "mailto:")
		if href != "" && hrefRe.MatchString(href) && label != target && label != href {
			w.text(" (" + href + ")")
		}
	case atom.Img:
		if alt := strings.TrimSpace(attr(n, "alt")); alt != "" {
			w.text("[" + alt + "]")
		}
	default:
		children()
	}
}

func (w *textWriter) result() string {
	lines := strings.Split(w.b.String(), "\n")
	out := lines[:0]
	blank := 0
	for _, l := range lines {
		l = strings.TrimRight(l, " \t\u00a0")
		if l == "" {
			blank++
			if blank > 1 {
				continue
			}
		} else {
			blank = 0
		}
		out = append(out, l)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}
