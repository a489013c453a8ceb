package push_test

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/internal/wire"
)

var commitTime = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// directMessage is alice's text "hi" to bob.
func directMessage() push.Message {
	return push.Message{ID: 1000, From: "alice", SenderName: "Alice", To: "bob",
		Type: wire.TypeText, Body: "hi", CommittedAt: commitTime}
}

// groupMessage is alice's text to group team ("Team") of members.
func groupMessage(members int, body string) push.Message {
	return push.Message{ID: 1000, From: "alice", SenderName: "Alice", Group: "team", GroupName: "Team",
		GroupMembers: members, Type: wire.TypeText, Body: body, CommittedAt: commitTime}
}

func TestIsCandidate(t *testing.T) {
	const limit = 100
	withMentions := func(m push.Message, uids ...string) push.Message { m.Mentions = uids; return m }
	withReplyTo := func(m push.Message, uid string) push.Message { m.ReplyToAuthor = uid; return m }
	tests := []struct {
		name string
		m    push.Message
		r    push.Recipient
		want bool
	}{
		{"direct: the recipient", directMessage(), push.Recipient{UID: "bob"}, true},
		{"direct: not the sender", directMessage(), push.Recipient{UID: "alice"}, false},
		{"direct: not a third user", directMessage(), push.Recipient{UID: "carol"}, false},
		{"empty user ID", directMessage(), push.Recipient{}, false},
		{"small group: every member", groupMessage(3, "hi"), push.Recipient{UID: "bob"}, true},
		{"small group: not the sender", groupMessage(3, "hi"), push.Recipient{UID: "alice"}, false},
		{"exactly the limit: every member", groupMessage(limit, "hi"), push.Recipient{UID: "bob"}, true},
		{"over the limit: not a bystander", groupMessage(limit+1, "hi"), push.Recipient{UID: "bob"}, false},
		{"large group: mentioned in the envelope", withMentions(groupMessage(5000, "hi"), "bob"), push.Recipient{UID: "bob"}, true},
		{"large group: envelope mention in capitals", withMentions(groupMessage(5000, "hi"), "Bob"), push.Recipient{UID: "bob"}, true},
		{"large group: @mention in the body", groupMessage(5000, "hey @bob, look"), push.Recipient{UID: "bob"}, true},
		{"large group: @Mention in capitals", groupMessage(5000, "hey @BOB"), push.Recipient{UID: "bob"}, true},
		{"large group: mention inside a word", groupMessage(5000, "mail x@bob now"), push.Recipient{UID: "bob"}, false},
		{"large group: mention of a longer name", groupMessage(5000, "@bobby hi"), push.Recipient{UID: "bob"}, false},
		{"large group: another user mentioned", withMentions(groupMessage(5000, "@carol"), "carol"), push.Recipient{UID: "bob"}, false},
		{"large group: reply to the recipient", withReplyTo(groupMessage(5000, "yes"), "bob"), push.Recipient{UID: "bob"}, true},
		{"large group: reply to someone else", withReplyTo(groupMessage(5000, "yes"), "carol"), push.Recipient{UID: "bob"}, false},
		{"large group: opted in", groupMessage(5000, "hi"), push.Recipient{UID: "bob", OptedIn: true}, true},
		{"large group: the sender mentioning themself", groupMessage(5000, "@alice"), push.Recipient{UID: "alice", OptedIn: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := push.IsCandidate(tt.m, tt.r, limit); got != tt.want {
				t.Fatalf("IsCandidate(%q) = %v, want %v", tt.r.UID, got, tt.want)
			}
		})
	}
}

func TestIsCandidateDefaultLimit(t *testing.T) {
	bob := push.Recipient{UID: "bob"}
	if !push.IsCandidate(groupMessage(push.DefaultGroupLimit, "hi"), bob, 0) {
		t.Fatal("a group of exactly the default limit should push everyone when the limit is unset")
	}
	if push.IsCandidate(groupMessage(push.DefaultGroupLimit+1, "hi"), bob, 0) {
		t.Fatal("a group over the default limit should not push a bystander when the limit is unset")
	}
}

func TestCandidates(t *testing.T) {
	m := groupMessage(1000, "@bob and @Dave.")
	m.ReplyToAuthor = "carol"
	recipients := []push.Recipient{{UID: "alice"}, {UID: "bob"}, {UID: "carol"}, {UID: "dave"},
		{UID: "erin"}, {UID: "frank", OptedIn: true}}
	var got []string
	for _, r := range push.Candidates(m, recipients, 100) {
		got = append(got, r.UID)
	}
	want := []string{"bob", "carol", "dave", "frank"}
	if !slices.Equal(got, want) {
		t.Fatalf("Candidates = %v, want %v", got, want)
	}
}

func TestDNDActive(t *testing.T) {
	at := func(hhmm string) time.Time {
		c, err := time.Parse("15:04", hhmm)
		if err != nil {
			t.Fatal(err)
		}
		return time.Date(2026, 12, 3, c.Hour(), c.Minute(), 0, 0, time.UTC)
	}
	night := push.DND{From: 22 * time.Hour, To: 7 * time.Hour}
	lunch := push.DND{From: 12 * time.Hour, To: 13 * time.Hour}
	tests := []struct {
		name string
		dnd  push.DND
		at   time.Time
		want bool
	}{
		{"zero value is off", push.DND{}, at("03:00"), false},
		{"from equal to to is empty", push.DND{From: 9 * time.Hour, To: 9 * time.Hour}, at("09:00"), false},
		{"same day: inside", lunch, at("12:30"), true},
		{"same day: at the start", lunch, at("12:00"), true},
		{"same day: at the end (exclusive)", lunch, at("13:00"), false},
		{"same day: before", lunch, at("11:59"), false},
		{"across midnight: late evening", night, at("23:30"), true},
		{"across midnight: after midnight", night, at("00:15"), true},
		{"across midnight: early morning", night, at("06:59"), true},
		{"across midnight: at the end", night, at("07:00"), false},
		{"across midnight: midday", night, at("12:00"), false},
		{"across midnight: just before", night, at("21:59"), false},
		// 21:30 UTC is 23:30 at UTC+2, inside 22:00-07:00 local time.
		{"offset east: local night", push.DND{From: 22 * time.Hour, To: 7 * time.Hour, UTCOffset: 2 * time.Hour}, at("21:30"), true},
		// 06:00 UTC is 01:00 at UTC-5.
		{"offset west: local night", push.DND{From: 22 * time.Hour, To: 7 * time.Hour, UTCOffset: -5 * time.Hour}, at("06:00"), true},
		// 23:00 UTC is 18:00 at UTC-5.
		{"offset west: local evening", push.DND{From: 22 * time.Hour, To: 7 * time.Hour, UTCOffset: -5 * time.Hour}, at("23:00"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.dnd.Active(tt.at); got != tt.want {
				t.Fatalf("Active(%s) = %v, want %v", tt.at.Format("15:04"), got, tt.want)
			}
		})
	}
}

func TestDNDValidate(t *testing.T) {
	tests := []struct {
		name string
		dnd  push.DND
		ok   bool
	}{
		{"zero", push.DND{}, true},
		{"across midnight, UTC+14", push.DND{From: 22 * time.Hour, To: 7 * time.Hour, UTCOffset: 14 * time.Hour}, true},
		{"UTC-12", push.DND{From: 23*time.Hour + 59*time.Minute, UTCOffset: -12 * time.Hour}, true},
		{"from 24:00", push.DND{From: 24 * time.Hour}, false},
		{"negative to", push.DND{To: -time.Minute}, false},
		{"offset beyond 14h", push.DND{UTCOffset: 15 * time.Hour}, false},
		{"offset below -14h", push.DND{UTCOffset: -15 * time.Hour}, false},
	}
	for _, tt := range tests {
		if err := tt.dnd.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestDNDActiveIgnoresTheTimeZoneOfItsArgument(t *testing.T) {
	d := push.DND{From: 22 * time.Hour, To: 7 * time.Hour}
	utc := time.Date(2026, 12, 3, 23, 0, 0, 0, time.UTC)
	tokyo := utc.In(time.FixedZone("JST", 9*3600)) // 08:00 on the wall clock of Tokyo
	if !d.Active(tokyo) {
		t.Fatal("the window is in the DND's offset, not in the location of the time passed")
	}
}

func TestDecide(t *testing.T) {
	grace := commitTime.Add(5 * time.Second)
	bobPhone := func() push.DeviceState { return push.DeviceState{UID: "bob", Device: "phone"} }
	with := func(f func(*push.DeviceState)) push.DeviceState { d := bobPhone(); f(&d); return d }
	tests := []struct {
		name string
		m    push.Message
		d    push.DeviceState
		now  time.Time
		want push.Verdict
	}{
		{"offline, nothing else: push", directMessage(), bobPhone(), grace, push.PushNow},
		{"this device connected", directMessage(), with(func(d *push.DeviceState) { d.Connected = []string{"bob/laptop", "bob/phone"} }), grace, push.SkipConnected},
		{"another device connected", directMessage(), with(func(d *push.DeviceState) { d.Connected = []string{"bob/laptop"} }), grace, push.PushNow},
		{"same device name of another user", directMessage(), with(func(d *push.DeviceState) { d.Connected = []string{"carol/phone"} }), grace, push.PushNow},
		{"direct conversation muted forever", directMessage(), with(func(d *push.DeviceState) { d.Mutes = []push.Mute{{Conversation: "user:alice"}} }), grace, push.SkipMuted},
		{"direct conversation muted until later", directMessage(), with(func(d *push.DeviceState) {
			d.Mutes = []push.Mute{{Conversation: "user:alice", Until: grace.Add(time.Hour)}}
		}), grace, push.SkipMuted},
		{"mute ended", directMessage(), with(func(d *push.DeviceState) {
			d.Mutes = []push.Mute{{Conversation: "user:alice", Until: grace}}
		}), grace, push.PushNow},
		{"another conversation muted", directMessage(), with(func(d *push.DeviceState) {
			d.Mutes = []push.Mute{{Conversation: "user:carol"}, {Conversation: "group:team"}}
		}), grace, push.PushNow},
		{"conversation with a user of another region muted", func() push.Message { m := directMessage(); m.From = "alice@eu"; return m }(),
			with(func(d *push.DeviceState) { d.Mutes = []push.Mute{{Conversation: "user:alice@eu"}} }), grace, push.SkipMuted},
		{"the local user of the same name muted", func() push.Message { m := directMessage(); m.From = "alice@eu"; return m }(),
			with(func(d *push.DeviceState) { d.Mutes = []push.Mute{{Conversation: "user:alice"}} }), grace, push.PushNow},
		{"group muted", groupMessage(3, "hi"), with(func(d *push.DeviceState) { d.Mutes = []push.Mute{{Conversation: "group:team"}} }), grace, push.SkipMuted},
		{"do-not-disturb on", directMessage(), with(func(d *push.DeviceState) { d.DND = &push.DND{From: 9 * time.Hour, To: 11 * time.Hour} }), grace, push.SkipDND},
		{"do-not-disturb off at this hour", directMessage(), with(func(d *push.DeviceState) { d.DND = &push.DND{From: 22 * time.Hour, To: 7 * time.Hour} }), grace, push.PushNow},
		{"read cursor past the message", directMessage(), with(func(d *push.DeviceState) { d.ReadUpTo = 1001 }), grace, push.SkipRead},
		{"read cursor equal to the message", directMessage(), with(func(d *push.DeviceState) { d.ReadUpTo = 1000 }), grace, push.SkipRead},
		{"read cursor past a late message still unread", directMessage(), with(func(d *push.DeviceState) { d.ReadUpTo, d.LateUnread = 1001, true }), grace, push.PushNow},
		{"read cursor before the message", directMessage(), with(func(d *push.DeviceState) { d.ReadUpTo = 999 }), grace, push.PushNow},
		{"just under a day old", directMessage(), bobPhone(), commitTime.Add(push.MessageExpiry - time.Nanosecond), push.PushNow},
		{"exactly a day old", directMessage(), bobPhone(), commitTime.Add(push.MessageExpiry), push.SkipExpired},
		{"expired wins over connected", directMessage(), with(func(d *push.DeviceState) { d.Connected = []string{"bob/phone"} }), commitTime.Add(48 * time.Hour), push.SkipExpired},
		{"sender blocked", groupMessage(3, "hi"), with(func(d *push.DeviceState) { d.SenderBlocked = true }), grace, push.SkipBlocked},
		{"read wins over muted", directMessage(), with(func(d *push.DeviceState) {
			d.ReadUpTo = 1000
			d.Mutes = []push.Mute{{Conversation: "user:alice"}}
		}), grace, push.SkipRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := push.Decide(tt.m, tt.d, tt.now); got != tt.want {
				t.Fatalf("Decide = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReadCursorComparesAsUnsigned(t *testing.T) {
	m := directMessage()
	m.ID = 1 << 63 // a snowflake with the top bit set must not compare as negative
	d := push.DeviceState{UID: "bob", Device: "phone", ReadUpTo: 1<<63 - 1}
	if got := push.Decide(m, d, commitTime); got != push.PushNow {
		t.Fatalf("Decide = %q, want push (cursor is before the message)", got)
	}
}

func TestBuildTitleAndBody(t *testing.T) {
	media := func(mime, caption string) push.Message {
		m := directMessage()
		m.Type, m.MediaMIME, m.Body = wire.TypeMedia, mime, caption
		return m
	}
	noNames := push.Message{ID: 7, From: "alice", Group: "team", GroupMembers: 3, Type: wire.TypeText, Body: "x", CommittedAt: commitTime}
	tests := []struct {
		name        string
		m           push.Message
		preview     push.Preview
		title, body string
	}{
		{"direct, full", directMessage(), push.PreviewFull, "Alice", "hi"},
		{"group, full", groupMessage(3, "hello team"), push.PreviewFull, "Alice in Team", "hello team"},
		{"names fall back to IDs", noNames, push.PreviewFull, "alice in team", "x"},
		{"direct, sender only", directMessage(), push.PreviewSender, "Alice", "New message"},
		{"group, sender only", groupMessage(3, "secret"), push.PreviewSender, "Alice in Team", "New message"},
		{"none", groupMessage(3, "secret"), push.PreviewNone, "", "New message"},
		{"unknown preference shows nothing", directMessage(), push.Preview("bogus"), "", "New message"},
		{"whitespace collapsed", groupMessage(3, "  line one\n\nline  two "), push.PreviewFull, "Alice in Team", "line one line two"},
		{"empty text", groupMessage(3, " "), push.PreviewFull, "Alice in Team", "New message"},
		{"photo", media("image/jpeg", ""), push.PreviewFull, "Alice", "Photo"},
		{"photo with caption", media("image/png", "sunset"), push.PreviewFull, "Alice", "Photo: sunset"},
		{"video", media("video/mp4", ""), push.PreviewFull, "Alice", "Video"},
		{"audio, MIME in capitals", media("Audio/OGG", ""), push.PreviewFull, "Alice", "Audio"},
		{"other file", media("application/pdf", ""), push.PreviewFull, "Alice", "File"},
		{"no MIME", media("", ""), push.PreviewFull, "Alice", "File"},
		{"media, none", media("image/jpeg", "sunset"), push.PreviewNone, "", "New message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := push.Build(tt.m, push.BuildOptions{Recipient: "bob", Preview: tt.preview})
			if n.Title != tt.title || n.Body != tt.body {
				t.Fatalf("title, body = %q, %q; want %q, %q", n.Title, n.Body, tt.title, tt.body)
			}
		})
	}
}

func TestBuildTruncatesOnARuneBoundary(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"exactly the limit is kept", strings.Repeat("a", push.MaxPreviewRunes), strings.Repeat("a", push.MaxPreviewRunes)},
		{"one over is cut", strings.Repeat("a", push.MaxPreviewRunes+1), strings.Repeat("a", push.MaxPreviewRunes-1) + "…"},
		{"multi-byte runes counted as runes", strings.Repeat("é", 200), strings.Repeat("é", push.MaxPreviewRunes-1) + "…"},
		{"four-byte runes", strings.Repeat("😀", 181), strings.Repeat("😀", push.MaxPreviewRunes-1) + "…"},
		{"no space before the ellipsis", strings.Repeat("a", push.MaxPreviewRunes-2) + " bcd", strings.Repeat("a", push.MaxPreviewRunes-2) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := push.Build(groupMessage(3, tt.body), push.BuildOptions{Recipient: "bob", Preview: push.PreviewFull})
			if n.Body != tt.want {
				t.Fatalf("body = %q (%d runes), want %q", n.Body, utf8.RuneCountInString(n.Body), tt.want)
			}
			if !utf8.ValidString(n.Body) || utf8.RuneCountInString(n.Body) > push.MaxPreviewRunes {
				t.Fatalf("body of %d runes, valid %v", utf8.RuneCountInString(n.Body), utf8.ValidString(n.Body))
			}
		})
	}
}

func TestBuildMetadata(t *testing.T) {
	n := push.Build(directMessage(), push.BuildOptions{Recipient: "bob", Preview: push.PreviewNone, Unread: 7})
	if n.Badge == nil || *n.Badge != 7 {
		t.Fatalf("badge %v, want 7", n.Badge)
	}
	if n.CollapseID != "user:alice" || n.ThreadID != "user:alice" || n.ConversationID != "user:alice" {
		t.Fatalf("collapse %q, thread %q, conversation %q; want user:alice (the peer as bob sees it)", n.CollapseID, n.ThreadID, n.ConversationID)
	}
	if n.MessageID != "1000" {
		t.Fatalf("message ID %q", n.MessageID)
	}
	if !n.MutableContent {
		t.Fatal("mutable-content should be set so that apps can fetch richer content")
	}
	if !n.Expiry.Equal(commitTime.Add(24 * time.Hour)) {
		t.Fatalf("expiry %v, want commit time + 24 h", n.Expiry)
	}
	if n.Sound != "default" {
		t.Fatalf("sound %q", n.Sound)
	}

	if n := push.Build(directMessage(), push.BuildOptions{Recipient: "bob", Unread: -3}); n.Badge == nil || *n.Badge != 0 {
		t.Fatalf("a negative unread count should give badge 0, got %v", n.Badge)
	}
	g := push.Build(groupMessage(3, "hi"), push.BuildOptions{Recipient: "bob"})
	if g.CollapseID != "group:team" || g.ConversationID != "group:team" {
		t.Fatalf("group collapse %q, conversation %q", g.CollapseID, g.ConversationID)
	}
}

func TestCollapseIDFitsAPNs(t *testing.T) {
	short := "group:" + strings.Repeat("g", 58) // 64 bytes: kept
	long := "group:" + strings.Repeat("g", 64)  // 70 bytes: hashed
	if got := push.CollapseID(short); got != short {
		t.Fatalf("a 64-byte ID should be kept, got %q", got)
	}
	h := push.CollapseID(long)
	if h == long || len(h) > push.MaxCollapseIDBytes || h == "" {
		t.Fatalf("a 70-byte ID should become a hash of at most 64 bytes, got %q", h)
	}
	if push.CollapseID(long) != h {
		t.Fatal("the hash must be stable")
	}
	if push.CollapseID("group:"+strings.Repeat("g", 63)+"h") == h {
		t.Fatal("different conversations should get different keys")
	}
}

func TestConversationFor(t *testing.T) {
	m := directMessage()
	if got := m.ConversationFor("bob"); got != "user:alice" {
		t.Fatalf("recipient sees %q", got)
	}
	if got := m.ConversationFor("alice"); got != "user:bob" {
		t.Fatalf("sender sees %q", got)
	}
	if got := groupMessage(3, "").ConversationFor("bob"); got != "group:team" {
		t.Fatalf("group %q", got)
	}
}
