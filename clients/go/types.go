package edgechat

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Message is a chat message as the server stores and delivers it.
type Message struct {
	ID      string     `json:"id,omitempty"`      // decimal snowflake ID; empty until the server assigned one
	From    string     `json:"from,omitempty"`    // sender's user ID
	To      string     `json:"to,omitempty"`      // recipient of a direct message
	Group   string     `json:"group,omitempty"`   // group of a group message
	CID     string     `json:"cid,omitempty"`     // the sender's client message ID (idempotency key)
	Type    string     `json:"type,omitempty"`    // "text", "media", ...
	Body    string     `json:"body,omitempty"`    // text
	ReplyTo string     `json:"replyTo,omitempty"` // ID of the message this one answers
	Media   *MediaInfo `json:"media,omitempty"`   // the upload a media message carries (Type "media")
	// Mentions are the users the message mentions: those the sender
	// named (a UI's pick, at most 50, each a user ID or name@region;
	// they need not be spelled in the body) and those the server found
	// spelled @name in the body, each once. The server refuses a
	// malformed one (a *PublishError wrapping ErrInvalidMessage).
	Mentions []string `json:"mentions,omitempty"`

	// Status is "undeliverable" for a message to a user of another
	// region that region refused for good, or to a group of another
	// region that its home refused, with Reason (no_such_user,
	// forbidden, invalid), or that this region's link dropped after
	// --link-retention (Reason expired); empty otherwise. History and sync carry it;
	// the sender's devices also get {"type":"undeliverable",...} on
	// OnEvent (docs/regions.md).
	Status string `json:"status,omitempty"`
	Reason string `json:"reason,omitempty"`

	// Time is when the server created the message, read from the ID (zero
	// when the ID is empty). It is not part of the JSON.
	Time time.Time `json:"-"`
}

// MediaInfo describes a processed upload: what UploadMedia returns, what
// a media message carries (the server fills it in when it stores the
// message, so that it can be shown without another request) and what
// GET /media/{id}/info answers. Only ID matters when sending.
type MediaInfo struct {
	ID          string `json:"id"`
	Mime        string `json:"mime,omitempty"`
	Kind        string `json:"kind,omitempty"` // MediaImage, MediaVideo, MediaAudio, MediaPDF or MediaFile
	Name        string `json:"name,omitempty"` // the uploader's file name; untrusted, sanitise before using it as a path
	Size        int64  `json:"size,omitempty"` // bytes of the processed file
	Width       int    `json:"width,omitempty"`
	Height      int    `json:"height,omitempty"`
	DurationMs  int64  `json:"durationMs,omitempty"`
	Placeholder string `json:"placeholder,omitempty"` // a tiny blurred image as a data: URI
	Preview     bool   `json:"preview,omitempty"`     // DownloadMedia(..., preview=true) has something to fetch
}

// Media is the former name of MediaInfo, kept so that code written
// against it still builds.
//
// Deprecated: use MediaInfo.
type Media = MediaInfo

// Media kinds, as the server classifies an upload from its bytes.
const (
	MediaImage = "image"
	MediaVideo = "video"
	MediaAudio = "audio"
	MediaPDF   = "pdf"
	MediaFile  = "file"
)

// UnmarshalJSON decodes a message and fills Time from the ID.
func (m *Message) UnmarshalJSON(b []byte) error {
	type plain Message
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*m = Message(p)
	m.Time = IDTime(m.ID)
	return nil
}

// Peer returns the other side of a direct message from me's point of
// view, or the group for a group message.
func (m Message) Peer(me string) string {
	switch {
	case m.Group != "":
		return m.Group
	case m.From == me:
		return m.To
	default:
		return m.From
	}
}

// IDTime returns the creation time encoded in a message ID, or the zero
// time when id is not a valid ID.
func IDTime(id string) time.Time {
	if id == "" {
		return time.Time{}
	}
	sid, err := snowflake.Parse(id)
	if err != nil {
		return time.Time{}
	}
	return sid.Time()
}

// CompareIDs orders two message IDs numerically (IDs sort by time). An
// empty or invalid ID sorts after every valid one: it is a message the
// server has not numbered yet. It returns -1, 0 or +1.
func CompareIDs(a, b string) int {
	ia, ea := snowflake.Parse(a)
	ib, eb := snowflake.Parse(b)
	switch {
	case ea != nil && eb != nil:
		return 0
	case ea != nil:
		return 1
	case eb != nil:
		return -1
	case ia < ib:
		return -1
	case ia > ib:
		return 1
	}
	return 0
}

// Receipt says that Peer received or read my messages up to UpTo.
type Receipt struct {
	Type string `json:"type"` // "delivered" or "read"
	UpTo string `json:"upTo"`
	Peer string `json:"peer,omitempty"`
}

// Receipt types.
const (
	ReceiptDelivered = "delivered"
	ReceiptRead      = "read"
)

// ReadState says where my own read cursor of a conversation now stands:
// OnRead gets one each time it moves, whichever of my devices (this
// client included) read, through MarkRead, MarkGroupRead or another
// client (the server's conversation.read event on user/{me}/events).
type ReadState struct {
	Peer  string `json:"peer,omitempty"`  // a direct conversation's peer
	Group string `json:"group,omitempty"` // or a group's ID
	UpTo  string `json:"upTo"`            // the newest message ID I have read there
	// Unread is the conversation's unread count after the move, as
	// Conversations would answer it (capped at 1000).
	Unread int `json:"unread"`
}

// TypingNotice says that From started or stopped typing, to me (Group
// empty) or in Group, one of my groups. A notice is best effort and
// never stored: a UI that shows "typing" also stops showing it after a
// few seconds without a new notice.
type TypingNotice struct {
	From  string `json:"from"`
	Group string `json:"group,omitempty"`
	State string `json:"state"` // TypingStarted or TypingStopped
}

// Typing states.
const (
	TypingStarted = "typing"
	TypingStopped = "stopped"
)

// Presence is a user's status.
type Presence struct {
	Status   string    `json:"status"` // "online", "inactive" or "offline"
	LastSeen time.Time `json:"lastSeen"`
}

// Presence statuses.
const (
	StatusOnline   = "online"
	StatusInactive = "inactive"
	StatusOffline  = "offline"
)

// Conversation is one entry of the conversation list.
type Conversation struct {
	Peer        string  `json:"peer,omitempty"`
	Group       string  `json:"group,omitempty"`
	LastMessage Message `json:"lastMessage"`
	Unread      int     `json:"unread"`
	// PeerRead (direct conversations) is the ID up to which the peer has
	// read: my messages with an ID up to it are read ("" when the peer
	// read nothing yet, or I blocked them). The read receipts that come
	// live move it further.
	PeerRead string `json:"peerRead,omitempty"`
}

// Profile is a user's public profile.
type Profile struct {
	UserID      string `json:"userId"`
	DisplayName string `json:"displayName,omitempty"`
	// Deleted: the account was deleted and erased; DisplayName is
	// "deleted user" (its group messages stay).
	Deleted bool `json:"deleted,omitempty"`
}

// Tokens are what /auth/login and /auth/refresh return.
type Tokens struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
	ExpiresIn    int    `json:"expiresIn"` // seconds
	UserID       string `json:"userId"`

	// Expiry is when the access token expires, computed from ExpiresIn
	// when the tokens were received (zero if unknown).
	Expiry time.Time `json:"-"`
}

// Errors callers can test with errors.Is.
var (
	ErrClosed           = errors.New("edgechat: client closed")
	ErrNotConnected     = errors.New("edgechat: not connected")
	ErrBadOptions       = errors.New("edgechat: bad options")
	ErrBadToken         = errors.New("edgechat: malformed access token")
	ErrInvalidArgument  = errors.New("edgechat: invalid argument")
	ErrUnauthorized     = errors.New("edgechat: unauthorized")
	ErrNotFound         = errors.New("edgechat: not found")
	ErrRefused          = errors.New("edgechat: refused by the server")
	ErrInvalidMessage   = fmt.Errorf("%w: invalid message", ErrRefused)
	ErrForbidden        = fmt.Errorf("%w: not authorized", ErrRefused)
	ErrUnknownRecipient = fmt.Errorf("%w: unknown recipient", ErrRefused)
	// ErrMediaTooLarge: the upload is over the server's size limit (413).
	ErrMediaTooLarge = fmt.Errorf("%w: media too large", ErrRefused)
	// ErrMediaQuota: the daily upload quota is spent (429 media_quota;
	// APIError.RetryAfter says when it frees up).
	ErrMediaQuota = fmt.Errorf("%w: media quota exceeded", ErrRefused)
	// ErrRateLimited: over one of the server's rate limits (HTTP 429
	// rate_limited, APIError.RetryAfter says when to ask again; a publish
	// refused 0x97 quota exceeded): not a refusal, the same request later
	// may pass.
	ErrRateLimited = errors.New("edgechat: rate limited")
	// ErrUnavailable: the server cannot do it now (HTTP 503, with
	// APIError.RetryAfter; a publish not committed, 0x83): no leader or
	// quorum, a node starting. Also HTTP 507 (the node's disk is full:
	// nothing was stored) and a gateway's 502 or 504 for a node it
	// cannot reach. Not a refusal: ask again (maybe through another
	// node).
	ErrUnavailable = errors.New("edgechat: server unavailable")
)

// APIError is an error answer of the HTTP API.
type APIError struct {
	Status  int    // HTTP status
	Code    string // stable error code from the body
	Message string
	// RetryAfter is the server's Retry-After (429, 503), 0 when absent.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	if e.Code == "" && e.Message == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Is maps statuses onto the package's sentinel errors: 401
// ErrUnauthorized, 403 ErrForbidden (a refusal: ErrRefused, as over
// MQTT), 404 ErrNotFound, 400 ErrInvalidArgument, the media codes
// ErrMediaTooLarge and ErrMediaQuota (refusals too), 429 rate_limited
// ErrRateLimited, and 503, 507 and a gateway's 502 and 504
// ErrUnavailable (RetryAfter, when given, says when to ask again).
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrRateLimited:
		return e.Status == 429 && e.Code != "media_quota"
	case ErrUnavailable:
		switch e.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusInsufficientStorage:
			return true
		}
		return false
	case ErrUnauthorized:
		return e.Status == 401
	case ErrForbidden:
		return e.Status == 403
	case ErrRefused:
		return e.Status == 403 || e.Code == "media_too_large" || e.Code == "media_quota"
	case ErrNotFound:
		return e.Status == 404
	case ErrInvalidArgument:
		return e.Status == 400
	case ErrMediaTooLarge:
		return e.Code == "media_too_large"
	case ErrMediaQuota:
		return e.Code == "media_quota"
	}
	return false
}

// PublishError is a negative MQTT v5 acknowledgement of a publish.
type PublishError struct {
	Reason byte   // MQTT v5 reason code
	Text   string // the server's reason string, if any
}

func (e *PublishError) Error() string {
	s := fmt.Sprintf("edgechat: publish refused (reason 0x%02x)", e.Reason)
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// Unwrap maps the reason code onto the sentinel errors.
func (e *PublishError) Unwrap() error {
	switch e.Reason {
	case 0x99:
		return ErrInvalidMessage
	case 0x87:
		return ErrForbidden
	case 0x90:
		return ErrUnknownRecipient
	case 0x97:
		return ErrRateLimited
	case 0x83:
		return ErrUnavailable
	}
	return ErrRefused
}

// retryable reports whether a negative PUBACK may succeed when sent again:
// 0x80 unspecified, 0x83 not committed (server unavailable), 0x91 packet ID
// in use, 0x97 quota exceeded. Everything else is a refusal.
func retryableReason(rc byte) bool {
	switch rc {
	case 0x80, 0x83, 0x91, 0x97:
		return true
	}
	return false
}

// validUserID mirrors the server's rule (lowercase, 3-32 of a-z 0-9 _ . -,
// starting with a letter) so that bad input fails before it is sent. A
// user of another region is name@region (docs/regions.md).
func validUserID(s string) bool {
	a, err := address.Parse(s)
	return err == nil && validName(a.Name)
}

func validName(s string) bool {
	if len(s) < 3 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// validGroupID mirrors the server's rule for group IDs (1-64 of a-z A-Z
// 0-9 _ -, optionally @region for a group of another region).
func validGroupID(s string) bool { return wire.ValidGroupID(s) == nil }

// ValidUserID reports whether s is a well-formed user ID: a name, or
// name@region for a user of another region.
func ValidUserID(s string) bool { return validUserID(s) }

// Limits the server enforces on a message, checked here first.
const (
	MaxBodyBytes = 8 << 10
	MaxCIDLen    = 64
)
