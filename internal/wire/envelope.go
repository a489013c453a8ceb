// Package wire holds the types that travel between clients, the broker and
// the services: the chat message envelope, topic names, presence, receipt
// and typing payloads, and the type bytes of replicated commands. It is
// the ground floor: it imports nothing of edgechat's except snowflake.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// Limits on a client envelope.
const (
	// MaxEnvelopeBytes bounds a client's whole JSON payload. It leaves
	// room for a body of MaxBodyBytes however the client's encoder
	// escapes it: at worst 6 bytes a byte (\u003c for <, as Go's
	// encoding/json writes it; every non-ASCII character as \uXXXX, as
	// Python's json.dumps does), 48 KiB, and the other fields; it still
	// fits MQTT's 64 KiB packets. The server stores its own encoding of
	// the parsed envelope, so this bounds parsing only.
	MaxEnvelopeBytes = 56 << 10
	MaxBodyBytes     = 8 << 10 // the body field, as decoded (UTF-8 bytes)
	MaxCIDLen        = 64
	MaxMediaIDLen    = 128
)

// Message types a client may send.
const (
	TypeText  = "text"
	TypeMedia = "media"
)

// Sentinel errors of envelope parsing; ParseEnvelope wraps them in
// *EnvelopeError with the offending field.
var (
	ErrTooLarge     = errors.New("envelope too large")
	ErrMalformed    = errors.New("envelope is not a JSON object of the right shape")
	ErrUnknownType  = errors.New("unknown message type")
	ErrMissingCID   = errors.New("cid missing or invalid")
	ErrInvalidField = errors.New("invalid field")
)

// EnvelopeError says why an envelope was refused.
type EnvelopeError struct {
	Field string
	Err   error
	Msg   string
}

func (e *EnvelopeError) Error() string {
	if e.Field == "" {
		return e.Err.Error() + ": " + e.Msg
	}
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Msg)
}

func (e *EnvelopeError) Unwrap() error { return e.Err }

// Media refers to an upload. A client sends the ID; when the message is
// stored the server fills in the rest from the processed upload, so that
// clients render it without another request.
type Media struct {
	ID          string `json:"id"`
	Mime        string `json:"mime,omitempty"`
	Kind        string `json:"kind,omitempty"` // image, video, audio, pdf, file
	Name        string `json:"name,omitempty"`
	Size        int64  `json:"size,omitempty"`
	Width       int    `json:"width,omitempty"`
	Height      int    `json:"height,omitempty"`
	DurationMs  int64  `json:"durationMs,omitempty"`
	Placeholder string `json:"placeholder,omitempty"` // a tiny blurred image, data: URI
	Preview     bool   `json:"preview,omitempty"`     // GET /media/{id}/preview exists
}

// Envelope is a chat message. Clients set CID, Type, Body, ReplyTo,
// Media and Mentions; the server sets ID, From, To or Group and
// overwrites anything a client put there, and adds to Mentions the users
// that @username tokens of the body name (see MergeMentions).
type Envelope struct {
	ID      snowflake.ID  `json:"id,omitempty"`
	From    string        `json:"from,omitempty"`
	To      string        `json:"to,omitempty"`
	Group   string        `json:"group,omitempty"`
	CID     string        `json:"cid"`
	Type    string        `json:"type"`
	Body    string        `json:"body,omitempty"`
	ReplyTo *snowflake.ID `json:"replyTo,omitempty"`
	Media   *Media        `json:"media,omitempty"`
	// Mentions are the user IDs the message mentions, each once, at most
	// MaxMentions. A client may list users its UI picked (a mention need
	// not be spelled in the body); the push bridge pushes them even in a
	// group too large to push everyone.
	Mentions []string `json:"mentions,omitempty"`
}

// Marshal encodes the envelope; it cannot fail for a valid envelope.
func (e *Envelope) Marshal() []byte {
	if b, ok := appendEnvelopeFast(make([]byte, 0, envelopeSizeHint(e)), e); ok {
		return b
	}
	b, err := json.Marshal(e)
	if err != nil {
		panic("wire: marshal envelope: " + err.Error())
	}
	return b
}

// clientEnvelope is what a client may send: unknown fields are refused,
// the server-owned fields are accepted and ignored.
type clientEnvelope struct {
	ID      json.RawMessage `json:"id"`
	From    json.RawMessage `json:"from"`
	To      json.RawMessage `json:"to"`
	Group   json.RawMessage `json:"group"`
	CID     *string         `json:"cid"`
	Type    *string         `json:"type"`
	Body    *string         `json:"body"`
	ReplyTo *string         `json:"replyTo"`
	Media   *Media          `json:"media"`
	// Mentions is kept raw so that a list of the wrong shape is refused
	// as an invalid "mentions" field rather than as a malformed envelope.
	Mentions json.RawMessage `json:"mentions"`
}

// ParseEnvelope validates a client's payload and returns the envelope with
// the server-owned fields cleared. Every refusal is an *EnvelopeError
// wrapping one of the sentinel errors above. The cid is new input: it
// holds only visible characters (Visible).
func ParseEnvelope(payload []byte) (Envelope, error) {
	return parseEnvelope(payload, MaxEnvelopeBytes, true)
}

// ParseEnvelopeWithin is ParseEnvelope with a limit on the whole payload
// other than a client's (the body's stays MaxBodyBytes): an envelope the
// server stored and forwards (a region link) is Marshal's encoding, which
// writes <, >, &, U+2028 and U+2029 as 6-byte escapes, so a body a client
// sent well within MaxEnvelopeBytes may come back larger than it. Its
// cid follows the rule of stored envelopes (no C0 control or DEL): a
// message stored before the rule of new cids still passes.
func ParseEnvelopeWithin(payload []byte, maxBytes int) (Envelope, error) {
	return parseEnvelope(payload, maxBytes, false)
}

func parseEnvelope(payload []byte, maxBytes int, client bool) (Envelope, error) {
	if len(payload) > maxBytes {
		return Envelope{}, &EnvelopeError{Err: ErrTooLarge, Msg: fmt.Sprintf("%d bytes, limit %d", len(payload), maxBytes)}
	}
	if !utf8.Valid(payload) {
		return Envelope{}, &EnvelopeError{Err: ErrMalformed, Msg: "not UTF-8"}
	}
	ce, ok := parseClientEnvelopeFast(payload)
	if !ok {
		var err error
		if ce, err = decodeClientEnvelope(payload); err != nil {
			return Envelope{}, err
		}
	}
	if ce.CID == nil || *ce.CID == "" || len(*ce.CID) > MaxCIDLen || !printable(*ce.CID) || client && !Visible(*ce.CID) {
		return Envelope{}, &EnvelopeError{Field: "cid", Err: ErrMissingCID, Msg: fmt.Sprintf("1 to %d bytes of printable characters required "+
			"(no control, format, bidi or zero-width characters, no space but U+0020)", MaxCIDLen)}
	}
	if ce.Type == nil {
		return Envelope{}, &EnvelopeError{Field: "type", Err: ErrUnknownType, Msg: "missing"}
	}
	env := Envelope{CID: *ce.CID, Type: *ce.Type}
	if ce.Body != nil {
		env.Body = *ce.Body
	}
	if len(env.Body) > MaxBodyBytes {
		return Envelope{}, &EnvelopeError{Field: "body", Err: ErrTooLarge, Msg: fmt.Sprintf("limit %d bytes", MaxBodyBytes)}
	}
	if ce.ReplyTo != nil {
		id, err := snowflake.Parse(*ce.ReplyTo)
		if err != nil {
			return Envelope{}, &EnvelopeError{Field: "replyTo", Err: ErrInvalidField, Msg: "must be a decimal message id"}
		}
		env.ReplyTo = &id
	}
	if ce.Mentions != nil {
		m, err := parseMentions(ce.Mentions)
		if err != nil {
			return Envelope{}, err
		}
		env.Mentions = m
	}
	switch env.Type {
	case TypeText:
		if env.Body == "" {
			return Envelope{}, &EnvelopeError{Field: "body", Err: ErrInvalidField, Msg: "text message needs a body"}
		}
		if ce.Media != nil {
			return Envelope{}, &EnvelopeError{Field: "media", Err: ErrInvalidField, Msg: "text message cannot carry media"}
		}
	case TypeMedia:
		if ce.Media == nil || ce.Media.ID == "" || len(ce.Media.ID) > MaxMediaIDLen || !printable(ce.Media.ID) {
			return Envelope{}, &EnvelopeError{Field: "media.id", Err: ErrInvalidField, Msg: "media message needs a media id"}
		}
		if len(ce.Media.Mime) > 128 || !printable(ce.Media.Mime) {
			return Envelope{}, &EnvelopeError{Field: "media.mime", Err: ErrInvalidField, Msg: "invalid mime type"}
		}
		// Only the ID (and the legacy mime hint) come from the client;
		// the server fills in the rest from the upload.
		env.Media = &Media{ID: ce.Media.ID, Mime: ce.Media.Mime}
	default:
		return Envelope{}, &EnvelopeError{Field: "type", Err: ErrUnknownType, Msg: fmt.Sprintf("%q (want text or media)", env.Type)}
	}
	return env, nil
}

// decodeClientEnvelope reads any client envelope with encoding/json:
// unknown fields and trailing data are refused.
func decodeClientEnvelope(payload []byte) (clientEnvelope, error) {
	var ce clientEnvelope
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ce); err != nil {
		return clientEnvelope{}, &EnvelopeError{Err: ErrMalformed, Msg: err.Error()}
	}
	// Anything but white space after the object is trailing data (dec.More
	// answers false before a stray ']' or '}').
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return clientEnvelope{}, &EnvelopeError{Err: ErrMalformed, Msg: "trailing data after the JSON object"}
	}
	return ce, nil
}

// parseMentions reads a client's mentions list: null or an array of at
// most MaxMentions user IDs, lower-cased (people type "@Bob"; user IDs
// are lowercase), duplicates dropped. An empty list is no list, so that
// an accepted envelope survives Marshal (which omits it) unchanged.
func parseMentions(raw json.RawMessage) ([]string, error) {
	bad := func(msg string) error { return &EnvelopeError{Field: "mentions", Err: ErrInvalidField, Msg: msg} }
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, bad("must be an array of user ids")
	}
	if len(list) > MaxMentions {
		return nil, bad(fmt.Sprintf("%d entries, limit %d", len(list), MaxMentions))
	}
	var out []string
	for i, uid := range list {
		uid = asciiLower(uid)
		if ValidPeerID(uid) != nil { // not echoed: it may be kilobytes of anything (name@region: a user of a linked region)
			return nil, bad(fmt.Sprintf("entry %d is not a user id", i))
		}
		if !slices.Contains(out, uid) {
			out = append(out, uid)
		}
	}
	return out, nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
