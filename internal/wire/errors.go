package wire

import (
	"errors"
	"fmt"
)

// Principal is an authenticated identity: who a token or an MQTT
// connection belongs to.
type Principal struct {
	UserID string
	Admin  bool
	// Link is set (to the peer's region name) for the connection of
	// another region's link (client ID $link/{region}); UserID is then
	// empty.
	Link string
	// KeyID is the kid of the key that signed the user's access token
	// (so that revoking the key can close the sessions made with it).
	KeyID string
	// SessionID is the user's session (sign-in) the access token belongs
	// to ("" for tokens minted outside one, as `edgechat token`'s).
	SessionID string
}

// Errors that cross the boundary between services and their callers (the
// broker maps them to MQTT reason codes, the gateway to HTTP statuses).
// Services wrap them with %w.
var (
	ErrForbidden   = errors.New("not authorized")                       // MQTT 0x87, HTTP 403
	ErrNotFound    = errors.New("not found")                            // MQTT 0x90 for a topic naming no one, HTTP 404
	ErrUnavailable = errors.New("cannot commit now (no leader/quorum)") // MQTT PUBACK 0x83 "server unavailable: ...", HTTP 503
	ErrQuota       = errors.New("quota exceeded")                       // MQTT 0x97, HTTP 429
	ErrInvalid     = errors.New("invalid")                              // MQTT 0x99 payload format invalid, HTTP 400
	ErrBadToken    = errors.New("invalid or expired token")             // MQTT 0x86/0x87 at CONNECT, HTTP 401

	// ErrMediaNotReady: a media message names no ready upload of its
	// sender (MQTT 0x99, HTTP 422 "media_not_ready").
	ErrMediaNotReady = fmt.Errorf("media is not a ready upload of the sender: %w", ErrInvalid)

	// ErrNoRegion: an address names a region that is neither this one
	// nor a configured link (MQTT 0x90 "topic name invalid: unknown
	// region", HTTP 404).
	ErrNoRegion = fmt.Errorf("unknown region: %w", ErrNotFound)
)

// RegionUnreachableError is what a request that had to ask another
// region gets when that region cannot be asked now (its link is down, or
// it did not answer in time) and nothing is cached. It is ErrUnavailable
// (HTTP 503 "unavailable"), whose own words ("cannot commit now") would
// read as this cluster's trouble: an answer names the region instead.
type RegionUnreachableError struct {
	Region string
	Err    error // what asking it gave
}

func (e *RegionUnreachableError) Error() string {
	return "region " + e.Region + " cannot be reached now: " + e.Err.Error()
}

// Unwrap makes the error ErrUnavailable and what asking gave.
func (e *RegionUnreachableError) Unwrap() []error { return []error{e.Err, ErrUnavailable} }

// Refusal is an ErrForbidden that says why, in words a client may be
// told: the v5 reason string after "not authorized: " (PUBACK 0x87) and
// the message of HTTP 403 forbidden. The words tell no more than the
// refusal itself does (see RefusedByRecipient).
type Refusal struct{ Why string }

func (e *Refusal) Error() string { return "not authorized: " + e.Why }

// Unwrap makes the refusal ErrForbidden.
func (e *Refusal) Unwrap() error { return ErrForbidden }

// RefusedByRecipient refuses a direct message (or typing) to uid, who
// blocked the sender. A 0x87 / 403 to a user who exists already tells
// the sender that (no such user is 0x90 / 404): the words say no more,
// as the refusal of a group add a block refuses ("... does not accept
// being added by you") and the web app's "not allowed: bob does not
// accept your messages", and do not say "blocked".
func RefusedByRecipient(uid, what string) *Refusal {
	return &Refusal{Why: uid + " does not accept your " + what}
}

// RefusedNotMember refuses what a user who is not a member of group gid
// sends to it; a group that does not exist is refused so too, so that
// group IDs do not leak.
func RefusedNotMember(gid string) *Refusal {
	return &Refusal{Why: "not a member of group " + gid}
}
