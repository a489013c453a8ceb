package wire

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzParseEnvelope: never panics; every refusal is an *EnvelopeError
// wrapping a sentinel; every accepted envelope is within the limits, has
// no server-owned fields, and survives Marshal → ParseEnvelope unchanged.
func FuzzParseEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"cid":"c-7f3a","type":"text","body":"hello","replyTo":"7211938138472448001"}`,
		`{"cid":"c","type":"media","media":{"id":"m1","mime":"image/jpeg"}}`,
		`{"cid":"c","type":"text","body":"x","from":"mallory","id":"1","to":"bob","group":"g"}`,
		`{"cid":"c","type":"text","body":""}`,
		`{"cid":"c","type":"text","body":"x"} {}`,
		`{"cid":"\u0001","type":"text","body":"x"}`,
		`{"cid":"c","type":"text","body":"\ud800<>&"}`,
		`{"cid":"c","type":"text","body":"x","replyTo":"-1"}`,
		`{"cid":"c","type":"text","body":"@bob hi","mentions":["Bob","carol","bob"]}`,
		`{"cid":"c","type":"text","body":"x","mentions":[]}`,
		`{"cid":"c","type":"text","body":"x","mentions":null}`,
		`{"cid":"c","type":"text","body":"x","mentions":["a/b"]}`,
		`{"cid":"c","type":"text","body":"x","mentions":"bob"}`,
		`{"cid":"c","type":"text","body":"x","mentions":[1]}`,
		`[]`, `null`, ``, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		env, err := ParseEnvelope(payload)
		if err != nil {
			var ee *EnvelopeError
			if !errors.As(err, &ee) {
				t.Fatalf("error %T %v is not an *EnvelopeError", err, err)
			}
			known := false
			for _, s := range []error{ErrTooLarge, ErrMalformed, ErrUnknownType, ErrMissingCID, ErrInvalidField} {
				known = known || errors.Is(err, s)
			}
			if !known || ee.Error() == "" {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			if !reflect.DeepEqual(env, Envelope{}) {
				t.Fatalf("refusal returned a non-zero envelope %+v", env)
			}
			return
		}
		if len(payload) > MaxEnvelopeBytes || len(env.Body) > MaxBodyBytes {
			t.Fatalf("over limits accepted: %d bytes", len(payload))
		}
		if env.ID != 0 || env.From != "" || env.To != "" || env.Group != "" {
			t.Fatalf("server-owned fields kept: %+v", env)
		}
		if env.CID == "" || len(env.CID) > MaxCIDLen || (env.Type != TypeText && env.Type != TypeMedia) {
			t.Fatalf("invalid envelope accepted: %+v", env)
		}
		if len(env.Mentions) > MaxMentions || (env.Mentions != nil && len(env.Mentions) == 0) {
			t.Fatalf("mentions %q accepted", env.Mentions)
		}
		for i, uid := range env.Mentions {
			if ValidUserID(uid) != nil || slices.Contains(env.Mentions[:i], uid) {
				t.Fatalf("mentions %q: %q invalid or repeated", env.Mentions, uid)
			}
		}
		again, err := ParseEnvelope(env.Marshal())
		if err != nil {
			t.Fatalf("re-parse of %s: %v", env.Marshal(), err)
		}
		if again.CID != env.CID || again.Type != env.Type || again.Body != env.Body ||
			(again.ReplyTo == nil) != (env.ReplyTo == nil) || (env.ReplyTo != nil && *again.ReplyTo != *env.ReplyTo) ||
			(again.Media == nil) != (env.Media == nil) || (env.Media != nil && *again.Media != *env.Media) ||
			!slices.Equal(again.Mentions, env.Mentions) {
			t.Fatalf("round trip changed %+v into %+v", env, again)
		}
	})
}

// FuzzParseTopic: never panics; a chat kind's name is exactly the one its
// builder makes from the owner; KindOther never starts a chat subtree.
func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"user/alice/newMessage", "user/alice/typing", "user/alice/receipts", "user/alice/events",
		"group/G-1/newMessage", "group/g/typing", "presence/alice", "presence/alice/heartbeat", "$SYS/broker/x", "$SYS",
		"user/Alice/newMessage", "user/alice", "user//newMessage", "presence/alice/x", "sensors/t1", "", "/", "user/+/typing",
		"user/bob@us/newMessage", "user/bob@us/typing", "user/bob@-x/newMessage"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		tp := ParseTopic(name)
		var want string
		switch tp.Kind {
		case KindDirect:
			want = DirectTopic(tp.Owner)
		case KindUserTyping:
			want = TypingTopic(tp.Owner)
		case KindReceipts:
			want = ReceiptsTopic(tp.Owner)
		case KindEvents:
			want = EventsTopic(tp.Owner)
		case KindPresence:
			want = PresenceTopic(tp.Owner)
		case KindHeartbeat:
			want = HeartbeatTopic(tp.Owner)
		case KindGroup:
			want = GroupTopic(tp.Owner)
		case KindGroupTyping:
			want = "group/" + tp.Owner + "/typing"
		case KindSys:
			if name != "$SYS" && !strings.HasPrefix(name, "$SYS/") {
				t.Fatalf("%q is not $SYS", name)
			}
			return
		case KindChatInvalid:
			if !IsChatPrefix(name) {
				t.Fatalf("%q: invalid chat name outside the chat prefixes", name)
			}
			return
		case KindOther:
			first, _, _ := strings.Cut(name, "/")
			if first == "user" || first == "group" || first == "presence" {
				t.Fatalf("%q classified as other", name)
			}
			if tp.Owner != "" {
				t.Fatalf("%q: other with owner %q", name, tp.Owner)
			}
			return
		default:
			t.Fatalf("%q: unknown kind %d", name, tp.Kind)
		}
		if name != want {
			t.Fatalf("%q parsed as %v owner %q (builder gives %q)", name, tp.Kind, tp.Owner, want)
		}
		if strings.ContainsAny(tp.Owner, "/+#") || tp.Owner == "" {
			t.Fatalf("%q: owner %q", name, tp.Owner)
		}
		if tp.Kind == KindGroup || tp.Kind == KindGroupTyping {
			if ValidGroupID(tp.Owner) != nil {
				t.Fatalf("%q: invalid group %q", name, tp.Owner)
			}
		} else if tp.Kind == KindDirect || tp.Kind == KindUserTyping || tp.Kind == KindReceipts || tp.Kind == KindPresence {
			if ValidPeerID(tp.Owner) != nil {
				t.Fatalf("%q: invalid peer %q", name, tp.Owner)
			}
		} else if ValidUserID(tp.Owner) != nil {
			t.Fatalf("%q: invalid user %q", name, tp.Owner)
		}
	})
}

// FuzzParseClientID: an accepted ID splits into a valid user ID and a
// device ID that rejoin into the input; refusals return empty parts.
func FuzzParseClientID(f *testing.F) {
	for _, s := range []string{"alice/phone", "alice/", "/phone", "alice", "Alice/phone", "alice/ph/one", "alice/ph+one",
		"alice/\x00", "al/phone", "alice/" + strings.Repeat("d", 65), "alice/é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		u, d, err := ParseClientID(id)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) || u != "" || d != "" {
				t.Fatalf("%q: %q %q %v", id, u, d, err)
			}
			return
		}
		if u+"/"+d != id {
			t.Fatalf("%q split into %q %q", id, u, d)
		}
		if ValidUserID(u) != nil || d == "" || len(d) > 64 || strings.ContainsAny(d, "/+#") {
			t.Fatalf("%q accepted: user %q device %q", id, u, d)
		}
		for _, r := range d {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("%q: control character in device", id)
			}
		}
	})
}

// FuzzParseNewClientID: what the rule of new client IDs accepts the
// rule of stored ones accepts too (a session made now is read later),
// with a device of valid UTF-8 and only printable characters.
func FuzzParseNewClientID(f *testing.F) {
	for _, s := range []string{"alice/phone", "alice/phone\u0085", "alice/ph\u202eone", "alice/\u200b", "alice/é 2", "alice/\xff", "alice/\ufeff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		u, d, err := ParseNewClientID(id)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) || u != "" || d != "" {
				t.Fatalf("%q: %q %q %v", id, u, d, err)
			}
			return
		}
		if u2, d2, err := ParseClientID(id); err != nil || u2 != u || d2 != d {
			t.Fatalf("%q: new rule %q %q, stored rule %q %q %v", id, u, d, u2, d2, err)
		}
		if !utf8.ValidString(d) {
			t.Fatalf("%q: device not UTF-8", id)
		}
		for _, r := range d {
			if !unicode.IsPrint(r) {
				t.Fatalf("%q: %U in device", id, r)
			}
		}
	})
}
