package msgconv

import (
	"slices"
	"testing"
)

func TestBaseSubject(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, in, want string }{
		{"plain", "Permit application", "Permit application"},
		{"re", "Re: Permit application", "Permit application"},
		{"upper RE", "RE: Permit application", "Permit application"},
		{"repeated", "Re: Re: RE: Permit", "Permit"},
		{"fwd", "Fwd: Permit", "Permit"},
		{"fw", "FW: Permit", "Permit"},
		{"german AW WG", "AW: WG: Antrag", "Antrag"},
		{"scandinavian SV VS", "SV: VS: Ansökan", "Ansökan"},
		{"dutch Antw", "Antw: Aanvraag", "Aanvraag"},
		{"counted", "Re[2]: Permit", "Permit"},
		{"counted parens", "Re(3): Permit", "Permit"},
		{"space before colon", "Re : Permit", "Permit"},
		{"list tag", "[city-news] Weekly digest", "Weekly digest"},
		{"re then list tag", "Re: [city-news] Re: Weekly digest", "Weekly digest"},
		{"list tag then re", "[city-news] Re: Weekly digest", "Weekly digest"},
		{"automatic reply", "Automatic reply: Permit application 2024-117", "Permit application 2024-117"},
		{"chinese", "回复：会议通知", "会议通知"},
		{"white space collapsed", "  Re:   Permit \t application  ", "Permit application"},
		{"only a prefix kept", "Re:", "Re:"},
		{"only a tag kept", "[tag]", "[tag]"},
		{"word starting like a prefix", "Regarding the permit", "Regarding the permit"},
		{"prefix inside", "Permit Re: application", "Permit Re: application"},
		{"empty", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := BaseSubject(c.in); got != c.want {
				t.Errorf("BaseSubject(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

func TestReplySubject(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, in, want string }{
		{"new", "Permit application", "Re: Permit application"},
		{"already re", "Re: Permit application", "Re: Permit application"},
		{"many prefixes", "RE: AW: Re: Permit", "Re: Permit"},
		{"forward", "Fwd: Permit", "Re: Permit"},
		{"list", "[city-news] Weekly digest", "Re: Weekly digest"},
		{"empty", "", "Re:"},
		{"unicode", "Re: メールテスト", "Re: メールテスト"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ReplySubject(c.in); got != c.want {
				t.Errorf("ReplySubject(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

func TestThreadCandidates(t *testing.T) {
	t.Parallel()
	e := &Email{
		References: []string{"root@x", "mid@x", "parent@x"},
		InReplyTo:  []string{"parent@x", "other@x"},
	}
	want := []string{"root@x", "mid@x", "parent@x", "other@x"}
	if got := ThreadCandidates(e); !slices.Equal(got, want) {
		t.Errorf("ThreadCandidates = %v, want %v", got, want)
	}
	if got := ThreadCandidates(&Email{}); len(got) != 0 {
		t.Errorf("no headers: %v", got)
	}
}

func TestParseMsgIDs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in string
		want     []string
	}{
		{"one", "<a@b>", []string{"a@b"}},
		{"several folded", "<a@b>\r\n <c@d>  <e@f>", []string{"a@b", "c@d", "e@f"}},
		{"duplicates", "<a@b> <a@b>", []string{"a@b"}},
		{"no brackets", "a@b c@d", []string{"a@b", "c@d"}},
		{"comment", "<a@b> (from Bob)", []string{"a@b"}},
		{"in-reply-to prose", "Your message of Monday <a@b>", []string{"a@b"}},
		{"empty", "", nil},
		{"garbage", "no ids here", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := parseMsgIDs(c.in); !slices.Equal(got, c.want) {
				t.Errorf("parseMsgIDs(%q) = %v, want %v", c.in, got, c.want)
			}
		})
	}
}

func TestDecodeHeader(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in, want string
		ok             bool
	}{
		{"plain", "Hello", "Hello", true},
		{"q utf-8", "=?UTF-8?Q?h=C3=A9llo?=", "héllo", true},
		{"b utf-8", "=?utf-8?B?aMOpbGxv?=", "héllo", true},
		{"adjacent words joined", "=?UTF-8?Q?a?= =?UTF-8?Q?b?=", "ab", true},
		{"text between kept", "=?UTF-8?Q?a?= and =?UTF-8?Q?b?=", "a and b", true},
		{"multibyte split across words", "=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=", "éé", true},
		{"iso-2022-jp", "=?ISO-2022-JP?B?GyRCJWEhPCVrJUYlOSVIGyhC?=", "メールテスト", true},
		{"ks_c_5601", "=?ks_c_5601-1987?B?x9Gx27D6?=", "한글과", true},
		{"latin1 q", "=?iso-8859-1?Q?Gr=FC=DFe?=", "Grüße", true},
		{"unterminated", "=?UTF-8?Q?h=C3=A9llo", "héllo", false},
		{"fold inside word", "=?UTF-8?Q?h=C3=A9llo w=C3=B6rld?=", "héllo wörld", false},
		{"unknown charset kept readable", "=?x-klingon?Q?abc?=", "abc", false},
		{"raw latin1", "Gr\xfc\xdfe", "Grüße", false},
		{"raw utf-8", "Grüße", "Grüße", true},
		{"not a word", "a =? b", "a =? b", true},
		{"lower-case b with language", "=?utf-8*de?b?R3LDvMOfZQ==?=", "Grüße", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := decodeHeader(c.in)
			if got != c.want || ok != c.ok {
				t.Errorf("decodeHeader(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
			}
		})
	}
}
