package push

// The decision core of the push bridge: who is a candidate for a
// committed message (Candidates), whether a device is pushed when the
// grace period ends (Decide), and what it is shown (Build). Everything
// here is a pure function of its arguments: the sender reads devices,
// mutes, read cursors and presence, passes them in with the time, and
// does the sending.

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Defaults of the decision rules.
const (
	// DefaultGroupLimit is --push-group-limit: in a group with more
	// members, only mentions, replies and opted-in members are pushed, so
	// that one message to a huge group does not become a push per member.
	DefaultGroupLimit = 100
	// MessageExpiry is the age at which a message is no longer pushed (a
	// day-old chat notification is noise); the notification's Expiry is
	// the commit time plus it, so that providers drop it then too.
	MessageExpiry = 24 * time.Hour
	// MaxPreviewRunes is where the text preview is cut: about what a lock
	// screen shows, and well under every provider's payload limit.
	MaxPreviewRunes = 180
	// MaxCollapseIDBytes is the APNs limit on apns-collapse-id, the
	// smallest of the providers'.
	MaxCollapseIDBytes = 64
)

// Conversation name prefixes, the same as the mutes API of
// services/push: "user:{peer}" for a direct conversation (seen from the
// recipient, the peer is the sender) and "group:{gid}".
const (
	convUserPrefix  = "user:"
	convGroupPrefix = "group:"
)

// Message is what the decision core needs of a committed message.
type Message struct {
	ID snowflake.ID
	// From is the sender's user ID, SenderName their display name (From
	// when empty).
	From       string
	SenderName string
	// To is the recipient of a direct message; empty for a group message.
	To string
	// Group is the group ID of a group message, GroupName its display
	// name (Group when empty) and GroupMembers its member count.
	Group        string
	GroupName    string
	GroupMembers int
	// Type is wire.TypeText or wire.TypeMedia; MediaMIME is the media's
	// MIME type when the client gave one.
	Type      string
	Body      string
	MediaMIME string
	// Mentions are the user IDs the envelope mentions.
	Mentions []string
	// ReplyToAuthor is the author of the message this one answers; empty
	// when it answers none.
	ReplyToAuthor string
	CommittedAt   time.Time
}

// IsGroup reports whether m was sent to a group.
func (m Message) IsGroup() bool { return m.Group != "" }

// ConversationFor names m's conversation as recipient sees it (and as
// the mutes API names it): "group:{gid}", or "user:{sender}" for a direct
// message.
func (m Message) ConversationFor(recipient string) string {
	if m.IsGroup() {
		return convGroupPrefix + m.Group
	}
	peer := m.From
	if recipient == m.From {
		peer = m.To
	}
	return convUserPrefix + peer
}

// Recipient is a user who may be pushed for a message.
type Recipient struct {
	UID string
	// OptedIn: the user asked for every message of this group even though
	// it is larger than the group limit.
	OptedIn bool
}

// Candidates returns the recipients of m who are push candidates (see
// IsCandidate), in their order. The body is scanned for mentions once,
// which matters for a group of thousands.
func Candidates(m Message, recipients []Recipient, groupLimit int) []Recipient {
	mentioned := mentionSet(m)
	var out []Recipient
	for _, r := range recipients {
		if isCandidate(m, r, groupLimit, mentioned) {
			out = append(out, r)
		}
	}
	return out
}

// IsCandidate reports whether r may be pushed for m at all: never the
// sender, in a direct message only its recipient, and in a group larger
// than groupLimit (DefaultGroupLimit when not positive) only a member who
// is mentioned, whose message m replies to, or who opted in.
func IsCandidate(m Message, r Recipient, groupLimit int) bool {
	return isCandidate(m, r, groupLimit, mentionSet(m))
}

func isCandidate(m Message, r Recipient, groupLimit int, mentioned map[string]bool) bool {
	switch {
	case r.UID == "" || r.UID == m.From:
		return false
	case !m.IsGroup():
		return r.UID == m.To
	case m.GroupMembers <= effectiveGroupLimit(groupLimit):
		return true
	default:
		return r.OptedIn || m.ReplyToAuthor == r.UID || mentioned[r.UID]
	}
}

func effectiveGroupLimit(limit int) int {
	if limit <= 0 {
		return DefaultGroupLimit
	}
	return limit
}

// Mentioned is every user m mentions, as Candidates reads them (see
// mentionSet): in a group above the group limit, with opt-ins and a
// reply's author, the only members who may be pushed.
func Mentioned(m Message) map[string]bool { return mentionSet(m) }

// mentionSet is every user m mentions: the envelope's list and the
// @username tokens of the body (clients that do not fill the list still
// mention), but for a message from another region, whose list is whole
// and whose body names that region's users.
func mentionSet(m Message) map[string]bool {
	set := make(map[string]bool, len(m.Mentions))
	for _, uid := range m.Mentions {
		set[strings.ToLower(uid)] = true
	}
	if strings.IndexByte(m.From, '@') >= 0 {
		// From another region: the body's @tokens name users there; its
		// list, stamped there, came translated (bridge/region mentions.go).
		return set
	}
	for _, uid := range wire.ScanMentions(m.Body) {
		set[uid] = true
	}
	return set
}

// ScanMentions is [wire.ScanMentions], which it became when the archive
// started to record mentions too.
//
// Deprecated: use wire.ScanMentions.
func ScanMentions(body string) []string { return wire.ScanMentions(body) }

// DND is a daily do-not-disturb window in the user's time zone: pushes
// are held back from From until To (clock times since local midnight;
// From after To crosses midnight, as in 22:00-07:00). From equal to To is
// an empty window, so the zero DND is off.
type DND struct {
	From, To time.Duration
	// UTCOffset is the user's time zone offset east of UTC (+2h for
	// UTC+02:00), as the client reports it.
	UTCOffset time.Duration
}

// Validate reports a window that could never be meant: clock times
// outside a day, or an offset beyond the ±14 h of real time zones (a
// window of 25:00 would silently never start).
func (d DND) Validate() error {
	const day = 24 * time.Hour
	switch {
	case d.From < 0 || d.From >= day || d.To < 0 || d.To >= day:
		return fmt.Errorf("push: do-not-disturb from %v to %v: clock times must be in [0, 24h)", d.From, d.To)
	case d.UTCOffset < -14*time.Hour || d.UTCOffset > 14*time.Hour:
		return fmt.Errorf("push: do-not-disturb offset %v beyond ±14h", d.UTCOffset)
	}
	return nil
}

// Active reports whether at falls inside the window ([From, To)).
func (d DND) Active(at time.Time) bool {
	if d.From == d.To {
		return false
	}
	clock := clockOf(at.UTC().Add(d.UTCOffset))
	if d.From < d.To {
		return clock >= d.From && clock < d.To
	}
	return clock >= d.From || clock < d.To
}

// clockOf is t's time of day.
func clockOf(t time.Time) time.Duration {
	h, m, s := t.Clock()
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
		time.Duration(s)*time.Second + time.Duration(t.Nanosecond())
}

// Mute is a conversation a user muted; a zero Until mutes it until it
// is unmuted (services/push.Mute with its pointer flattened).
type Mute struct {
	Conversation string
	Until        time.Time
}

// activeAt reports whether the mute holds at `at`.
func (m Mute) activeAt(at time.Time) bool { return m.Until.IsZero() || at.Before(m.Until) }

// DeviceState is what the sender knows of one recipient device when the
// grace period ends.
type DeviceState struct {
	UID    string
	Device string // the {deviceID} of the MQTT client ID {uid}/{device}
	// Connected are client IDs ({uid}/{device}) connected anywhere in the
	// cluster now; the caller may pass the user's or all of them.
	Connected []string
	// Mutes are the user's mutes (any conversation).
	Mutes []Mute
	// DND is the user's do-not-disturb window; nil is none.
	DND *DND
	// ReadUpTo is the user's read cursor in the message's conversation
	// (the newest message read on any device); 0 when nothing was read.
	ReadUpTo snowflake.ID
	// LateUnread: a message below ReadUpTo still counts as unread (it was
	// stored after the cursor last moved, with an ID below it: the node
	// that took it had a clock behind, or it came from another region
	// late), so a message at or below the cursor is not taken as read.
	LateUnread bool
	// SenderBlocked: the user has blocked the message's sender (a group
	// message still reaches them, and a direct one accepted just before
	// the block is stored).
	SenderBlocked bool
}

// Verdict is the outcome of Decide; its value is usable as a metric
// label.
type Verdict string

// The verdicts: PushNow, or why not.
const (
	PushNow       Verdict = "push"
	SkipExpired   Verdict = "expired"
	SkipBlocked   Verdict = "blocked"
	SkipRead      Verdict = "read"
	SkipConnected Verdict = "connected"
	SkipMuted     Verdict = "muted"
	SkipDND       Verdict = "dnd"
)

// Decide says, at now (the end of the grace period or later, on retry),
// whether device d is pushed for m. The checks go from the cheapest and
// most definite reason to the least, so that the verdict names the one a
// user would expect: a message too old, from a sender the user blocked,
// already read, a device that is online (it gets the message over MQTT),
// a muted conversation, then do-not-disturb.
func Decide(m Message, d DeviceState, now time.Time) Verdict {
	switch {
	case !now.Before(m.CommittedAt.Add(MessageExpiry)):
		return SkipExpired
	case d.SenderBlocked:
		return SkipBlocked
	case d.ReadUpTo != 0 && d.ReadUpTo >= m.ID && !d.LateUnread:
		return SkipRead
	case connected(d):
		return SkipConnected
	case muted(d.Mutes, m.ConversationFor(d.UID), now):
		return SkipMuted
	case d.DND != nil && d.DND.Active(now):
		return SkipDND
	}
	return PushNow
}

func connected(d DeviceState) bool {
	id := d.UID + "/" + d.Device
	for _, c := range d.Connected {
		if c == id {
			return true
		}
	}
	return false
}

func muted(mutes []Mute, conv string, at time.Time) bool {
	for _, mu := range mutes {
		if mu.Conversation == conv && mu.activeAt(at) {
			return true
		}
	}
	return false
}

// Preview is a user's preview preference (the values of services/push).
type Preview string

// The preview preferences.
const (
	PreviewFull   Preview = "full"   // sender and text
	PreviewSender Preview = "sender" // sender, "New message" as the body
	PreviewNone   Preview = "none"   // "New message" only
)

// GenericBody is the body when the preview hides the text.
const GenericBody = "New message"

// BuildOptions are the recipient's side of a notification.
type BuildOptions struct {
	Recipient string
	// Preview is the recipient's preference; an unknown value shows no
	// more than PreviewNone would, so that a bad setting never leaks text.
	Preview Preview
	// Unread is the recipient's total unread count (the badge).
	Unread int
}

// Build makes the notification of m for one recipient.
func Build(m Message, o BuildOptions) Notification {
	conv := m.ConversationFor(o.Recipient)
	title, body := "", GenericBody
	switch o.Preview {
	case PreviewFull:
		title, body = notificationTitle(m), previewBody(m)
	case PreviewSender:
		title = notificationTitle(m)
	}
	badge := max(o.Unread, 0)
	return Notification{
		Title:          title,
		Body:           body,
		Badge:          &badge,
		Sound:          "default",
		CollapseID:     CollapseID(conv),
		ThreadID:       conv,
		MessageID:      m.ID.String(),
		ConversationID: conv,
		Expiry:         m.CommittedAt.Add(MessageExpiry),
		MutableContent: true,
	}
}

// notificationTitle is "Alice", or "Alice in Team" for a group.
func notificationTitle(m Message) string {
	sender := orDefault(m.SenderName, m.From)
	if !m.IsGroup() {
		return sender
	}
	return sender + " in " + orDefault(m.GroupName, m.Group)
}

// previewBody is the text of m shortened for a lock screen; media get a
// label of their kind, before the caption if there is one.
func previewBody(m Message) string {
	text := strings.Join(strings.Fields(m.Body), " ") // newlines waste the few lines shown
	if m.Type == wire.TypeMedia {
		label := mediaLabel(m.MediaMIME)
		if text == "" {
			return label
		}
		text = label + ": " + text
	}
	if text == "" {
		return GenericBody
	}
	return truncateRunes(text, MaxPreviewRunes)
}

// mediaLabel names a media message by its MIME family.
func mediaLabel(mime string) string {
	family, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(mime)), "/")
	switch family {
	case "image":
		return "Photo"
	case "video":
		return "Video"
	case "audio":
		return "Audio"
	}
	return "File"
}

// truncateRunes cuts s to at most n runes, the last one an ellipsis when
// it was cut; cutting on a rune boundary keeps the text valid UTF-8.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	cut, runes := 0, 0
	for i := range s {
		if runes == n-1 {
			cut = i
			break
		}
		runes++
	}
	return strings.TrimRight(s[:cut], " ") + "…"
}

// CollapseID is the collapse (and dedup) key of a conversation: the name
// itself when it fits APNs' 64 bytes, else a hash of it, so that every
// provider gets the same key for the conversation.
func CollapseID(conv string) string {
	return collapseKey(conv, MaxCollapseIDBytes, func(r rune) bool { return r > ' ' && r < utf8.RuneSelf })
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
