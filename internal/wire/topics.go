package wire

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/edgechat/edgechat/internal/address"
)

// TopicKind classifies an MQTT topic name against the contract's table.
type TopicKind int

// Topic kinds of the contract.
const (
	KindOther       TopicKind = iota // outside the chat table
	KindDirect                       // user/{uid}/newMessage
	KindGroup                        // group/{gid}/newMessage
	KindPresence                     // presence/{uid}
	KindHeartbeat                    // presence/{uid}/heartbeat
	KindUserTyping                   // user/{uid}/typing
	KindGroupTyping                  // group/{gid}/typing
	KindReceipts                     // user/{uid}/receipts
	KindEvents                       // user/{uid}/events
	KindSys                          // $SYS/...
	KindChatInvalid                  // under user/, group/ or presence/ but not in the table
)

var kindNames = [...]string{"other", "direct", "group", "presence", "heartbeat", "user_typing", "group_typing", "receipts", "events", "sys", "invalid"}

func (k TopicKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Archived reports whether messages of this kind are stored.
func (k TopicKind) Archived() bool { return k == KindDirect || k == KindGroup }

// Topic is a parsed topic name: its kind and the user or group it belongs to.
type Topic struct {
	Kind  TopicKind
	Owner string // uid or gid; empty for KindOther and KindSys
}

// ErrInvalidName is returned for user, device or group names that break the rules.
var ErrInvalidName = errors.New("invalid name")

// ParseTopic classifies a topic name (not a filter: wildcards make the
// owner invalid). It never fails: names outside the table are KindOther,
// malformed names under the chat prefixes are KindChatInvalid.
func ParseTopic(name string) Topic {
	if strings.HasPrefix(name, "$SYS/") || name == "$SYS" {
		return Topic{Kind: KindSys}
	}
	// strings.Cut rather than Split: this runs on every publish and on
	// every delivery of a chat topic, and must not allocate.
	first, rest, more := strings.Cut(name, "/")
	if first != "user" && first != "group" && first != "presence" {
		return Topic{Kind: KindOther}
	}
	owner, leaf, hasLeaf := strings.Cut(rest, "/")
	levels := 1
	if more {
		levels = 2
		if hasLeaf {
			levels = 3
			if strings.Contains(leaf, "/") {
				levels = 4 // or more
			}
		}
	}
	switch first {
	case "user":
		// name@region is a user of a linked region: messages, typing and
		// receipts cross links (bridge/region); events do not.
		remote := strings.IndexByte(owner, '@') >= 0 && ValidPeerID(owner) == nil
		if levels == 3 && (remote || ValidUserID(owner) == nil) {
			switch leaf {
			case "newMessage":
				return Topic{KindDirect, owner}
			case "typing":
				return Topic{KindUserTyping, owner}
			case "receipts":
				return Topic{KindReceipts, owner}
			case "events":
				if !remote {
					return Topic{KindEvents, owner}
				}
			}
		}
	case "group":
		if levels == 3 && ValidGroupID(owner) == nil {
			switch leaf {
			case "newMessage":
				return Topic{KindGroup, owner}
			case "typing":
				return Topic{KindGroupTyping, owner}
			}
		}
	case "presence":
		if levels == 2 && strings.IndexByte(owner, '@') >= 0 && ValidPeerID(owner) == nil {
			return Topic{KindPresence, owner} // presence of a user of a linked region
		}
		if levels >= 2 && ValidUserID(owner) == nil {
			if levels == 2 {
				return Topic{KindPresence, owner}
			}
			if levels == 3 && leaf == "heartbeat" {
				return Topic{KindHeartbeat, owner}
			}
		}
	}
	return Topic{Kind: KindChatInvalid}
}

// IsChatPrefix reports whether a topic name or filter starts in one of the
// chat subtrees, where the contract's rules apply even in dev mode.
func IsChatPrefix(nameOrFilter string) bool {
	first, _, _ := strings.Cut(nameOrFilter, "/")
	switch first {
	case "user", "group", "presence", "+", "#":
		return true
	}
	return false
}

// Topic names of the contract.
func DirectTopic(uid string) string    { return "user/" + uid + "/newMessage" }
func GroupTopic(gid string) string     { return "group/" + gid + "/newMessage" }
func PresenceTopic(uid string) string  { return "presence/" + uid }
func HeartbeatTopic(uid string) string { return "presence/" + uid + "/heartbeat" }
func TypingTopic(uid string) string    { return "user/" + uid + "/typing" }
func ReceiptsTopic(uid string) string  { return "user/" + uid + "/receipts" }
func EventsTopic(uid string) string    { return "user/" + uid + "/events" }

// UserIDs are lowercase usernames: 3 to 32 characters of a-z, 0-9, '_',
// '.' and '-', starting with a letter. They appear in topics and client
// IDs, so they never hold '/', '+', '#' or spaces.
func ValidUserID(s string) error {
	if len(s) < 3 || len(s) > 32 {
		return ErrInvalidName
	}
	if s[0] < 'a' || s[0] > 'z' {
		return ErrInvalidName
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return ErrInvalidName
		}
	}
	return nil
}

// ValidPeerID accepts the peer of a direct conversation: a user ID, or
// a user ID of another region qualified with it ("bob@us",
// internal/address).
// LowercaseHint is " (user IDs are lowercase: alice)" for a name that
// is a user ID (or name@region) but for its capitals, the name a user
// typed as they signed up (registration lowers it), else "": for the
// messages that refuse such a name.
func LowercaseHint(s string) string {
	if l := strings.ToLower(s); l != s && ValidPeerID(l) == nil {
		return " (user IDs are lowercase: " + l + ")"
	}
	return ""
}

func ValidPeerID(s string) error {
	if strings.IndexByte(s, '@') < 0 {
		return ValidUserID(s)
	}
	a, err := address.Parse(s)
	if err != nil || a.Region == "" {
		return ErrInvalidName
	}
	return ValidUserID(a.Name)
}

// ValidGroupID accepts group IDs: 1 to 64 characters of a-z, A-Z, 0-9,
// '_' and '-', optionally qualified with the region the group lives in
// ("k3x9@eu", a group of another region as its members here see it).
func ValidGroupID(s string) error {
	if gid, region, ok := strings.Cut(s, "@"); ok {
		if address.ValidRegion(region) != nil {
			return ErrInvalidName
		}
		s = gid
	}
	if len(s) < 1 || len(s) > 64 {
		return ErrInvalidName
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return ErrInvalidName
		}
	}
	return nil
}

// ParseClientID splits an MQTT client ID "{userID}/{deviceID}". The device
// ID is 1 to 64 bytes without '/', '+', '#' or C0 control characters
// (DEL included): the rule of IDs stored before the stricter one of new
// input (ParseNewClientID), which sessions, push registrations and the
// FSM's entries of an earlier version may hold. A device ID a client
// names anew goes through ParseNewClientID or ValidNewDeviceID.
func ParseClientID(clientID string) (userID, deviceID string, err error) {
	u, d, ok := strings.Cut(clientID, "/")
	if !ok || ValidUserID(u) != nil || d == "" || len(d) > 64 || strings.ContainsAny(d, "/+#") || !printable(d) {
		return "", "", ErrInvalidName
	}
	return u, d, nil
}

// ParseNewClientID is ParseClientID for a client ID a client gives now
// (an MQTT CONNECT): the device ID also holds only visible characters
// (see ValidNewDeviceID).
func ParseNewClientID(clientID string) (userID, deviceID string, err error) {
	u, d, err := ParseClientID(clientID)
	if err != nil {
		return "", "", err
	}
	if err := ValidNewDeviceID(d); err != nil {
		return "", "", err
	}
	return u, d, nil
}

// NewDeviceIDRule says what ValidNewDeviceID takes, for error messages.
const NewDeviceIDRule = "1 to 64 bytes of printable characters without '/', '+' or '#' " +
	"(no control, format, bidi or zero-width characters, no space but U+0020)"

// ValidNewDeviceID checks a device ID a client names anew (a CONNECT's
// client ID, a sign-in's or a push registration's device): ParseClientID's
// rule, and every character printable (Visible). Device IDs show in
// logs, the session list of the web UI and push payloads.
func ValidNewDeviceID(d string) error {
	if d == "" || len(d) > 64 || strings.ContainsAny(d, "/+#") || !Visible(d) {
		return fmt.Errorf("%w: device ID: %s", ErrInvalidName, NewDeviceIDRule)
	}
	return nil
}

// Visible reports whether s is valid UTF-8 of printable characters only
// (unicode.IsPrint: letters, marks, numbers, punctuation, symbols and
// U+0020): no C0 or C1 control character, DEL, format character (bidi
// controls such as U+202E, zero-width characters, U+FEFF, the soft
// hyphen), line or paragraph separator, space other than U+0020,
// private-use or unassigned code point. It is the rule of the IDs a
// client names anew (device IDs, cids); what was stored under the looser
// rule before (printable) is still read.
func Visible(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !unicode.IsPrint(r) {
			return false
		}
		i += n
	}
	return true
}
