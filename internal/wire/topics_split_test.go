package wire

import (
	"strings"
	"testing"
)

// parseTopicSplit is ParseTopic as it was written with strings.Split, the
// reference the allocation-free version must agree with.
func parseTopicSplit(name string) Topic {
	if strings.HasPrefix(name, "$SYS/") || name == "$SYS" {
		return Topic{Kind: KindSys}
	}
	parts := strings.Split(name, "/")
	switch parts[0] {
	case "user":
		if len(parts) == 3 && strings.Contains(parts[1], "@") && ValidPeerID(parts[1]) == nil {
			switch parts[2] {
			case "newMessage":
				return Topic{KindDirect, parts[1]}
			case "typing":
				return Topic{KindUserTyping, parts[1]}
			case "receipts":
				return Topic{KindReceipts, parts[1]}
			}
		}
		if len(parts) == 3 && ValidUserID(parts[1]) == nil {
			switch parts[2] {
			case "newMessage":
				return Topic{KindDirect, parts[1]}
			case "typing":
				return Topic{KindUserTyping, parts[1]}
			case "receipts":
				return Topic{KindReceipts, parts[1]}
			case "events":
				return Topic{KindEvents, parts[1]}
			}
		}
		return Topic{Kind: KindChatInvalid}
	case "group":
		if len(parts) == 3 && ValidGroupID(parts[1]) == nil {
			switch parts[2] {
			case "newMessage":
				return Topic{KindGroup, parts[1]}
			case "typing":
				return Topic{KindGroupTyping, parts[1]}
			}
		}
		return Topic{Kind: KindChatInvalid}
	case "presence":
		if len(parts) == 2 && strings.Contains(parts[1], "@") && ValidPeerID(parts[1]) == nil {
			return Topic{KindPresence, parts[1]}
		}
		if len(parts) >= 2 && ValidUserID(parts[1]) == nil {
			if len(parts) == 2 {
				return Topic{KindPresence, parts[1]}
			}
			if len(parts) == 3 && parts[2] == "heartbeat" {
				return Topic{KindHeartbeat, parts[1]}
			}
		}
		return Topic{Kind: KindChatInvalid}
	}
	return Topic{Kind: KindOther}
}

var parseTopicSeeds = []string{"user/alice/newMessage", "user/alice/typing", "user/alice/receipts", "user/alice/events",
	"user/alice/newMessage/x", "user/alice/", "user/alice", "user", "user/", "user//newMessage", "userx/alice/newMessage",
	"group/G-1/newMessage", "group/g/typing", "group/g/typing/", "group/g", "group/g/other", "group//typing",
	"presence/alice", "presence/alice/heartbeat", "presence/alice/heartbeat/x", "presence/alice/x", "presence/", "presence",
	"$SYS/broker/x", "$SYS", "$SYSx", "sensors/t1", "", "/", "//", "user/+/typing", "a/b/c/d",
	"user/bob@us/newMessage", "user/bob@us/typing", "user/bob@/newMessage", "user/@us/newMessage", "user/bob@us@eu/newMessage",
	"presence/bob@us", "presence/bob@us/heartbeat", "user/bob@us/events", "user/bob@us/receipts", "$link/eu/dm"}

func TestParseTopicMatchesSplitVersion(t *testing.T) {
	for _, s := range parseTopicSeeds {
		if got, want := ParseTopic(s), parseTopicSplit(s); got != want {
			t.Errorf("ParseTopic(%q) = %+v, want %+v", s, got, want)
		}
	}
}

func FuzzParseTopicMatchesSplitVersion(f *testing.F) {
	for _, s := range parseTopicSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := ParseTopic(name), parseTopicSplit(name); got != want {
			t.Fatalf("ParseTopic(%q) = %+v, want %+v", name, got, want)
		}
	})
}

// ParseTopic runs on every publish and every chat delivery.
func TestParseTopicDoesNotAllocate(t *testing.T) {
	for _, s := range []string{"user/alice/newMessage", "group/g1/newMessage", "presence/alice/heartbeat", "sensors/a/b"} {
		if n := testing.AllocsPerRun(100, func() { _ = ParseTopic(s) }); n != 0 {
			t.Errorf("ParseTopic(%q): %v allocations", s, n)
		}
	}
}

// Messages, typing, receipts and presence take a qualified user of
// another region; events and heartbeats are a user's own (never remote).
func TestQualifiedTopics(t *testing.T) {
	for name, want := range map[string]Topic{
		"user/bob@us/newMessage":    {KindDirect, "bob@us"},
		"user/bob@us/typing":        {KindUserTyping, "bob@us"},
		"user/bob@us/receipts":      {KindReceipts, "bob@us"},
		"presence/bob@us":           {KindPresence, "bob@us"},
		"user/bob@us/events":        {Kind: KindChatInvalid},
		"presence/bob@us/heartbeat": {Kind: KindChatInvalid},
		"user/Bob@us/newMessage":    {Kind: KindChatInvalid},
		"user/bob@u_s/newMessage":   {Kind: KindChatInvalid},
	} {
		if got := ParseTopic(name); got != want {
			t.Errorf("ParseTopic(%q) = %+v, want %+v", name, got, want)
		}
	}
}
