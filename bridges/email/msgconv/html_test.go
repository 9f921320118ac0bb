package msgconv

import (
	"testing"
)

func TestSanitizeHTML(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, in, want string }{
		{"allowed tags kept", "<p><b>b</b> <i>i</i> <u>u</u> <code>c</code></p>", "<p><b>b</b> <i>i</i> <u>u</u> <code>c</code></p>"},
		{"script dropped with content", "<p>a</p><script>alert(1)</script>", "<p>a</p>"},
		{"style dropped with content", "<style>p{color:red}</style><p>a</p>", "<p>a</p>"},
		{"event handler removed", `<p onclick="x()">a</p>`, "<p>a</p>"},
		{"javascript link removed", `<a href="javascript:alert(1)">x</a>`, "x"},
		{"https link kept", `<a href="https://example.com/a?b=c">x</a>`, `<a href="https://example.com/a?b=c">x</a>`},
		{"mailto link kept", `<a href="mailto:a@example.com">a</a>`, `<a href="mailto:a@example.com">a</a>`},
		{"relative link removed", `<a href="/etc/passwd">x</a>`, "x"},
		{"mxc link removed", `<a href="mxc://a/b">x</a>`, "x"},
		{"external image becomes alt text", `<img src="https://tracker.example/p.gif" alt="logo">`, "[logo]"},
		{"external image without alt vanishes", `<p>a<img src="https://tracker.example/p.gif"></p>`, "<p>a</p>"},
		{"mxc image kept", `<img src="mxc://example.com/abc" alt="x" width="10" onerror="y">`, `<img src="mxc://example.com/abc" alt="x" width="10"/>`},
		{"font color", `<font color="#ff0000" face="Arial">r</font>`, `<font color="#ff0000">r</font>`},
		{"bad color dropped", `<font color="red">r</font>`, `r`},
		{"span spoiler", `<span data-mx-spoiler="why" style="x">s</span>`, `<span data-mx-spoiler="why">s</span>`},
		{"code language", `<pre><code class="language-go">x</code></pre>`, `<pre><code class="language-go">x</code></pre>`},
		{"code other class dropped", `<code class="evil">x</code>`, `<code>x</code>`},
		{"details", `<details><summary>s</summary>d</details>`, `<details><summary>s</summary>d</details>`},
		{"table", `<table border="1"><tr><td>1</td></tr></table>`, `<table><tr><td>1</td></tr></table>`},
		{"iframe dropped", `<iframe src="https://x"></iframe>a`, "a"},
		{"form elements dropped", `<form><input value="x">a</form>`, "a"},
		{"ol start", `<ol start="3" type="a"><li>x</li></ol>`, `<ol start="3"><li>x</li></ol>`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := SanitizeHTML(c.in)
			if got != c.want {
				t.Errorf("SanitizeHTML(%q)\n got %q\nwant %q", c.in, got, c.want)
			}
			assertSafeHTML(t, got)
		})
	}
}

func TestHTMLToText(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, in, want string }{
		{"paragraphs", "<p>one</p><p>two</p>", "one\n\ntwo"},
		{"br", "a<br>b<br/>c", "a\nb\nc"},
		{"white space collapsed", "<p>  a \n\t b  </p>", "a b"},
		{"entities", "<p>&lt;x&gt; &amp; &quot;y&quot; &euro;</p>", "<x> & \"y\" €"},
		{"link with url", `<a href="https://example.com/">site</a>`, "site (https://example.com/)"},
		{"link same as text", `<a href="https://example.com/">https://example.com/</a>`, "https://example.com/"},
		{"mailto same as text", `<a href="mailto:a@example.com">a@example.com</a>`, "a@example.com"},
		{"unordered list", "<ul><li>a</li><li>b</li></ul>", "- a\n- b"},
		{"ordered list", "<ol><li>a</li><li>b</li></ol>", "1. a\n2. b"},
		{"blockquote", "<p>reply</p><blockquote>quoted<br>text</blockquote>", "reply\n\n> quoted\n> text"},
		{"script and style skipped", "<style>p{}</style><script>x()</script><p>a</p>", "a"},
		{"pre kept", "<pre>a  b\n  c</pre>", "a  b\n  c"},
		{"table cells", "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d"},
		{"image alt", `<img src="x" alt="logo">`, "[logo]"},
		{"inline tags", "a<b>b</b><i> c</i>", "ab c"},
		{"hr", "a<hr>b", "a\n---\nb"},
		{"full document", "<html><head><title>T</title></head><body><div>x</div></body></html>", "x"},
		{"outlook lines", `<p class="MsoNormal">Gut.</p><p class="MsoNormal">Gruß</p><p>Para</p>`, "Gut.\nGruß\n\nPara"},
		{"empty", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := HTMLToText(c.in); got != c.want {
				t.Errorf("HTMLToText(%q)\n got %q\nwant %q", c.in, got, c.want)
			}
		})
	}
}

func TestSplitQuotedText(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, in, main, quoted string }{
		{"gmail attribution", "Yes.\n\nOn Mon, 1 Apr 2024 at 10:00, Bob <b@x> wrote:\n> hi", "Yes.", "On Mon, 1 Apr 2024 at 10:00, Bob <b@x> wrote:\n> hi"},
		{"wrapped attribution", "Yes.\n\nOn Mon, 1 Apr 2024 at 10:00, Bob <\nb@x> wrote:\n> hi", "Yes.", "On Mon, 1 Apr 2024 at 10:00, Bob <\nb@x> wrote:\n> hi"},
		{"german attribution", "Ja.\n\nAm 01.04.2024 um 10:00 schrieb Bob <b@x>:\n> hallo", "Ja.", "Am 01.04.2024 um 10:00 schrieb Bob <b@x>:\n> hallo"},
		{"outlook original message", "Ok.\n\n-----Original Message-----\nFrom: Bob\nhi", "Ok.", "-----Original Message-----\nFrom: Bob\nhi"},
		{"outlook german underscore", "Gut.\n\n________________________________\nVon: Bob\nGesendet: Montag\nhi", "Gut.", "________________________________\nVon: Bob\nGesendet: Montag\nhi"},
		{"outlook header block", "Fine.\n\nFrom: Bob <b@x>\nSent: Monday\nTo: Alice\nSubject: x\n\nhi", "Fine.", "From: Bob <b@x>\nSent: Monday\nTo: Alice\nSubject: x\n\nhi"},
		{"trailing quote", "Sure.\n\n> old\n> text\n", "Sure.", "> old\n> text"},
		{"inline reply kept", "> question 1\nanswer 1\n> question 2\nanswer 2", "> question 1\nanswer 1\n> question 2\nanswer 2", ""},
		{"only a quote kept", "> just a quote", "> just a quote", ""},
		{"pure forward kept", "-----Original Message-----\nFrom: Bob\nhi", "-----Original Message-----\nFrom: Bob\nhi", ""},
		{"no quote", "Just text.\nMore text.", "Just text.\nMore text.", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			main, quoted := splitQuotedText(c.in)
			if main != c.main || quoted != c.quoted {
				t.Errorf("splitQuotedText(%q)\n got %q / %q\nwant %q / %q", c.in, main, quoted, c.main, c.quoted)
			}
		})
	}
}

func TestSplitQuotedHTML(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, in, main, quoted string }{
		{"gmail", `<div>Yes</div><div class="gmail_quote">On ... wrote:<blockquote>q</blockquote></div>`,
			`<div>Yes</div>`, `<div class="gmail_quote">On ... wrote:<blockquote>q</blockquote></div>`},
		{"apple cite", `<div>Yes</div><blockquote type="cite">q</blockquote><div>sig after</div>`,
			`<div>Yes</div>`, `<blockquote type="cite">q</blockquote><div>sig after</div>`},
		{"outlook nested", `<div class="WordSection1"><p>Ok</p><div id="divRplyFwdMsg">From: x</div><div>q</div></div><p>after</p>`,
			`<div class="WordSection1"><p>Ok</p></div>`, `<div id="divRplyFwdMsg">From: x</div><div>q</div><p>after</p>`},
		{"thunderbird", `<p>Yes</p><div class="moz-cite-prefix">On x wrote:</div><blockquote type="cite">q</blockquote>`,
			`<p>Yes</p>`, `<div class="moz-cite-prefix">On x wrote:</div><blockquote type="cite">q</blockquote>`},
		{"only quote kept", `<div class="gmail_quote">q</div>`, `<div class="gmail_quote">q</div>`, ""},
		{"no quote", `<p>a</p>`, `<p>a</p>`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			main, quoted := splitQuotedHTML(c.in)
			if main != c.main || quoted != c.quoted {
				t.Errorf("splitQuotedHTML(%q)\n got %q / %q\nwant %q / %q", c.in, main, quoted, c.main, c.quoted)
			}
		})
	}
}
