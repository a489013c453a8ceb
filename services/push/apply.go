package push

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

const (
	prefixDevice   = "r/push/d/" // + uid + "/" + device → Device
	prefixToken    = "r/push/t/" // + platform + "/" + hex(sha256(token)) → uid + "/" + device
	prefixMute     = "r/push/m/" // + uid + "/" + conversation → Mute
	prefixSettings = "r/push/s/" // + uid → Settings
	keyVAPID       = "r/push/vapid"
)

func deviceKey(uid, device string) []byte { return []byte(prefixDevice + uid + "/" + device) }

func tokenKey(platform, token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return []byte(prefixToken + platform + "/" + hex.EncodeToString(sum[:]))
}

func muteKey(uid, conv string) []byte { return []byte(prefixMute + uid + "/" + conv) }

// Device is a registered device of a user.
type Device struct {
	UserID       string        `json:"userId"`
	Device       string        `json:"device"`
	Platform     string        `json:"platform"`
	Token        string        `json:"token,omitempty"`
	AppID        string        `json:"appId,omitempty"`
	Sandbox      bool          `json:"sandbox,omitempty"`
	Subscription *Subscription `json:"subscription,omitempty"`
	CreatedAt    time.Time     `json:"createdAt"`
	UpdatedAt    time.Time     `json:"updatedAt"`
	// Session is the sign-in session whose access token registered it
	// last ("" for a token minted outside one): the registration goes
	// when that session ends (auth, dropSignedOutDevices).
	Session string `json:"session,omitempty"`
}

// ClientID is the MQTT client ID of the device: "{uid}/{device}".
func (d Device) ClientID() string { return d.UserID + "/" + d.Device }

func (d Device) registration() Registration {
	return Registration{Device: d.Device, Platform: d.Platform, Token: d.Token, AppID: d.AppID,
		Sandbox: d.Sandbox, Subscription: d.Subscription}
}

// Mute is a muted conversation; a zero Until mutes until unmuted.
type Mute struct {
	Conversation string     `json:"conversation"`
	Until        *time.Time `json:"until,omitempty"`
	MutedAt      time.Time  `json:"mutedAt"`
}

// Settings are a user's push preferences. Settings stored before DND
// existed have no "dnd" and read as DND off.
type Settings struct {
	Preview string `json:"preview"`
	// DND is the do-not-disturb window; nil is off.
	DND       *DND      `json:"dnd,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitempty"`
}

// Commands.
type devicePutCmd struct {
	UID     string       `json:"uid"`
	Reg     Registration `json:"reg"`
	At      time.Time    `json:"at"`
	Session string       `json:"session,omitempty"` // Device.Session
}

// deviceDelCmd removes uid's device, or (Token set) whichever device
// holds the token of Platform; with UID too, only if it is uid's.
type deviceDelCmd struct {
	UID      string `json:"uid,omitempty"`
	Device   string `json:"device,omitempty"`
	Platform string `json:"platform,omitempty"`
	Token    string `json:"token,omitempty"`
}

type muteCmd struct {
	UID    string     `json:"uid"`
	Conv   string     `json:"conv"`
	Until  *time.Time `json:"until,omitempty"`
	Delete bool       `json:"delete,omitempty"`
	At     time.Time  `json:"at"`
}

// settingsCmd changes some of a user's settings; the handler merges it
// into the stored ones, so that two clients changing different settings
// at once both win. Commands written before DND always carry a preview
// and no setDnd, which keeps their meaning.
type settingsCmd struct {
	UID string `json:"uid"`
	// Preview is the new preference; nil keeps the stored one.
	Preview *string `json:"preview,omitempty"`
	// SetDND replaces the window with DND (nil turns DND off); without
	// it the stored window stays and DND must be nil.
	SetDND bool      `json:"setDnd,omitempty"`
	DND    *DND      `json:"dnd,omitempty"`
	At     time.Time `json:"at"`
}

// vapidCmd carries a key pair, base64url: Private the 32-byte scalar,
// Public the 65-byte uncompressed point.
type vapidCmd struct {
	Private string `json:"private"`
	Public  string `json:"public"`
}

// putResult is the value of a device registration: the device and the
// registrations the token was taken from.
type putResult struct {
	Device Device
	Moved  []string // client IDs that held the token before
	devicesChanged
}

// deviceRemoved is the value of a device's removal: the device removed.
type deviceRemoved struct {
	Device
	devicesChanged
}

// decodeCmd reads a command; errors wrap errBadCommand and, when a
// field's own decoder said why (a DND window), that reason too.
func decodeCmd(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: %w", errBadCommand, err)
	}
	return nil
}

func countPrefix(tx *badger.Txn, prefix string) int {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// tokenHolder reads who holds a token ("" when nobody).
func tokenHolder(tx *badger.Txn, key []byte) (string, error) {
	it, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	v, err := it.ValueCopy(nil)
	return string(v), err
}

// applyDevicePut registers or refreshes a device. The token moves to it
// in the same transaction: a device of any user (this one included)
// that held the token loses its registration, and the device's own
// previous token is released. All checks come before the first write.
func (s *Service) applyDevicePut(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c devicePutCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if wire.ValidUserID(c.UID) != nil {
		return nil, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	reg, err := c.Reg.Normalize()
	if err != nil {
		return nil, err
	}
	self := c.UID + "/" + reg.Device
	tk := tokenKey(reg.Platform, reg.tokenOf())
	var old Device
	found, err := fsm.GetJSON(tx, deviceKey(c.UID, reg.Device), &old)
	if err != nil {
		return nil, err
	}
	holder, err := tokenHolder(tx, tk)
	if err != nil {
		return nil, err
	}
	if !found {
		n := countPrefix(tx, prefixDevice+c.UID+"/")
		if strings.HasPrefix(holder, c.UID+"/") {
			n-- // the user's own device that holds the token goes
		}
		if n >= MaxDevices {
			return nil, fmt.Errorf("%w: at most %d", ErrTooManyDevices, MaxDevices)
		}
	}
	// Writes.
	var moved []string
	changed := devicesChanged{c: &s.devices, uids: []string{c.UID}}
	if holder != "" && holder != self {
		huid, hdev, _ := strings.Cut(holder, "/")
		if huid != c.UID {
			changed.uids = append(changed.uids, huid)
		}
		if err := tx.Delete(deviceKey(huid, hdev)); err != nil {
			return nil, err
		}
		moved = append(moved, holder)
	}
	if found {
		if otk := tokenKey(old.Platform, old.registration().tokenOf()); string(otk) != string(tk) {
			if h, err := tokenHolder(tx, otk); err != nil {
				return nil, err
			} else if h == self {
				if err := tx.Delete(otk); err != nil {
					return nil, err
				}
			}
		}
	}
	d := Device{UserID: c.UID, Device: reg.Device, Platform: reg.Platform, Token: reg.Token, AppID: reg.AppID,
		Sandbox: reg.Sandbox, Subscription: reg.Subscription, CreatedAt: c.At, UpdatedAt: c.At, Session: c.Session}
	if found {
		d.CreatedAt = old.CreatedAt
	}
	s.holders.add(c.UID)
	if err := fsm.SetJSON(tx, deviceKey(c.UID, reg.Device), d); err != nil {
		return nil, err
	}
	if err := tx.Set(tk, []byte(self)); err != nil {
		return nil, err
	}
	return putResult{Device: d, Moved: moved, devicesChanged: changed}, nil
}

// applyDeviceDel removes a registration and its token index.
func (s *Service) applyDeviceDel(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c deviceDelCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	uid, device := c.UID, c.Device
	if c.Token != "" {
		holder, err := tokenHolder(tx, tokenKey(c.Platform, c.Token))
		if err != nil {
			return nil, err
		}
		huid, hdev, _ := strings.Cut(holder, "/")
		if holder == "" || (uid != "" && huid != uid) {
			return nil, ErrNoDevice
		}
		uid, device = huid, hdev
	}
	if wire.ValidUserID(uid) != nil || ValidDevice(device) != nil {
		return nil, fmt.Errorf("%w: bad uid or device", errBadCommand)
	}
	var d Device
	found, err := fsm.GetJSON(tx, deviceKey(uid, device), &d)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNoDevice
	}
	tk := tokenKey(d.Platform, d.registration().tokenOf())
	holder, err := tokenHolder(tx, tk)
	if err != nil {
		return nil, err
	}
	if holder == d.ClientID() {
		if err := tx.Delete(tk); err != nil {
			return nil, err
		}
	}
	if err := tx.Delete(deviceKey(uid, device)); err != nil {
		return nil, err
	}
	return deviceRemoved{Device: d, devicesChanged: devicesChanged{c: &s.devices, uids: []string{uid}}}, nil
}

func (s *Service) applyMute(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c muteCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if wire.ValidUserID(c.UID) != nil {
		return nil, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	if err := ValidConversation(c.Conv); err != nil {
		return nil, err
	}
	key := muteKey(c.UID, c.Conv)
	var old Mute
	found, err := fsm.GetJSON(tx, key, &old)
	if err != nil {
		return nil, err
	}
	changed := prefsChanged{c: &s.prefsCache, uid: c.UID}
	if c.Delete {
		if !found {
			return nil, nil
		}
		return changed, tx.Delete(key)
	}
	if c.Until != nil && !c.Until.After(c.At) {
		return nil, ErrInvalidUntil
	}
	// Expired mutes go when a new one is added, so that they never count
	// against the cap; c.At makes the choice the same on every node.
	var expired [][]byte
	if !found {
		var inForce int
		var err error
		if expired, inForce, err = expiredMutes(tx, c.UID, c.At); err != nil {
			return nil, err
		}
		if inForce >= MaxMutes {
			return nil, fmt.Errorf("%w: at most %d", ErrTooManyMutes, MaxMutes)
		}
	}
	for _, k := range expired {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
	}
	m := Mute{Conversation: c.Conv, Until: c.Until, MutedAt: c.At}
	return muteSet{Mute: m, prefsChanged: changed}, fsm.SetJSON(tx, key, m)
}

// expiredMutes returns the keys of uid's mutes that ended by `at` and
// the number still in force.
func expiredMutes(tx *badger.Txn, uid string, at time.Time) (expired [][]byte, inForce int, err error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMute + uid + "/"), PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var m Mute
		if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &m) }); err != nil {
			return nil, 0, err
		}
		if m.Until != nil && !at.Before(*m.Until) {
			expired = append(expired, it.Item().KeyCopy(nil))
			continue
		}
		inForce++
	}
	return expired, inForce, nil
}

// applySettings merges a settings change into the stored settings (the
// defaults when there are none). Every check comes before the write, and
// the DND window is validated again here (decoding does it), so that a
// command that bypassed the service's checks changes nothing.
func (s *Service) applySettings(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c settingsCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	switch {
	case wire.ValidUserID(c.UID) != nil:
		return nil, fmt.Errorf("%w: bad uid", errBadCommand)
	case c.Preview == nil && !c.SetDND:
		return nil, fmt.Errorf("%w: a settings command that changes nothing", errBadCommand)
	case c.DND != nil && !c.SetDND:
		return nil, fmt.Errorf("%w: a dnd window without setDnd", errBadCommand)
	}
	if c.Preview != nil {
		if err := ValidPreview(*c.Preview); err != nil {
			return nil, err
		}
	}
	if c.DND != nil {
		if err := c.DND.Validate(); err != nil {
			return nil, err
		}
	}
	key := []byte(prefixSettings + c.UID)
	st := Settings{Preview: PreviewFull}
	if _, err := fsm.GetJSON(tx, key, &st); err != nil {
		return nil, err
	}
	if c.Preview != nil {
		st.Preview = *c.Preview
	}
	if c.SetDND {
		st.DND = c.DND
	}
	st.UpdatedAt = c.At
	return settingsSet{Settings: st, prefsChanged: prefsChanged{c: &s.prefsCache, uid: c.UID}}, fsm.SetJSON(tx, key, st)
}

// applyVAPID stores the first key pair proposed and answers every later
// proposal with the stored one.
func (s *Service) applyVAPID(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c vapidCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	var cur vapidCmd
	found, err := fsm.GetJSON(tx, []byte(keyVAPID), &cur)
	if err != nil {
		return nil, err
	}
	if found {
		return cur, nil
	}
	if err := checkVAPID(c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	return c, fsm.SetJSON(tx, []byte(keyVAPID), c)
}
