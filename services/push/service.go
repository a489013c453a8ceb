package push

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

func (s *Service) propose(ctx context.Context, t byte, cmd any) (any, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("push: encode command: %w", err)
	}
	return s.proposer.Propose(ctx, t, b)
}

// Register registers or refreshes uid's device. A token (or Web Push
// endpoint) registered by any other device, of any user, moves to this
// one in the same command.
func (s *Service) Register(ctx context.Context, uid string, reg Registration) (Device, error) {
	return s.RegisterFrom(ctx, uid, "", reg)
}

// RegisterFrom is Register by the sign-in session sessionID (the access
// token's; "" for none), which the registration then belongs to: it goes
// when the session ends (DevicesRegisteredBy).
func (s *Service) RegisterFrom(ctx context.Context, uid, sessionID string, reg Registration) (Device, error) {
	if wire.ValidUserID(uid) != nil {
		return Device{}, fmt.Errorf("%w: user %q", errBadCommand, uid)
	}
	if err := ValidNewDevice(reg.Device); err != nil {
		return Device{}, err
	}
	reg, err := reg.Normalize()
	if err != nil {
		return Device{}, err
	}
	if !s.enabled[reg.Platform] {
		return Device{}, fmt.Errorf("%w: %s", ErrDisabled, reg.Platform)
	}
	cmd := devicePutCmd{UID: uid, Reg: reg, At: s.now().UTC(), Session: sessionID}
	v, err := s.propose(ctx, wire.CmdPushDevicePut, cmd)
	if errors.Is(err, ErrTooManyDevices) {
		// Registrations whose session has ended bring their devices
		// nothing (the bridge holds them back): they give way.
		var n int
		if n, err = s.dropEnded(ctx, uid); err == nil {
			err = fmt.Errorf("%w: at most %d", ErrTooManyDevices, MaxDevices)
			if n > 0 {
				v, err = s.propose(ctx, wire.CmdPushDevicePut, cmd)
			}
		}
	}
	if err != nil {
		return Device{}, fmt.Errorf("push: register device: %w", err)
	}
	if r, ok := v.(putResult); ok {
		for _, from := range r.Moved {
			s.log.Info("push token moved to another device", "from", from, "to", r.Device.ClientID(),
				"platform", reg.Platform, "token", shortToken(reg.tokenOf()))
		}
		return r.Device, nil
	}
	// The value did not survive a forwarded proposal: read back.
	return s.Device(uid, reg.Device)
}

// dropEnded removes uid's registrations whose sign-in session has ended
// (SignedIn) and returns how many went.
func (s *Service) dropEnded(ctx context.Context, uid string) (int, error) {
	if s.signedIn == nil {
		return 0, nil
	}
	ds, err := s.Devices(uid)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range ds {
		in, err := s.signedIn.DeviceSignedIn(uid, d.Device, d.Session)
		if err != nil {
			return n, fmt.Errorf("push: is %s/%s signed in: %w", uid, d.Device, err)
		}
		if in {
			continue
		}
		if err := s.Unregister(ctx, uid, d.Device); err != nil && !errors.Is(err, ErrNoDevice) {
			return n, err
		}
		s.log.Info("push registration of an ended session removed at the device limit", "uid", uid, "device", d.Device)
		n++
	}
	return n, nil
}

// Unregister removes uid's device; a device that is not registered is
// ErrNoDevice.
func (s *Service) Unregister(ctx context.Context, uid, device string) error {
	if wire.ValidUserID(uid) != nil || ValidDevice(device) != nil {
		return fmt.Errorf("%w: %s/%s", ErrNoDevice, uid, device)
	}
	if _, err := s.propose(ctx, wire.CmdPushDeviceDel, deviceDelCmd{UID: uid, Device: device}); err != nil {
		return fmt.Errorf("push: remove device: %w", err)
	}
	return nil
}

// DevicesRegisteredBy are the devices of uid whose registration one of
// sessions made last (Device.Session): the sessions' sign-out takes them
// with it (auth's Deps.RegisteredDevices).
func (s *Service) DevicesRegisteredBy(uid string, sessions map[string]bool) ([]string, error) {
	if len(sessions) == 0 {
		return nil, nil
	}
	ds, err := s.Devices(uid)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range ds {
		if d.Session != "" && sessions[d.Session] {
			out = append(out, d.Device)
		}
	}
	return out, nil
}

// RemoveDeviceOnLogout is the logout hook: a device that logs out
// stops getting pushes. A device with no registration is not an error.
func (s *Service) RemoveDeviceOnLogout(ctx context.Context, uid, device string) error {
	err := s.Unregister(ctx, uid, device)
	if errors.Is(err, ErrNoDevice) {
		return nil
	}
	return err
}

// RemoveToken removes the registration that holds a token the provider
// reported as dead (for Web Push the token is the endpoint). When uid is
// not empty, only a registration of uid is removed, so that a token that
// moved to another user meanwhile stays. ErrNoDevice: nobody holds it.
func (s *Service) RemoveToken(ctx context.Context, uid, platform, token string) error {
	if token == "" {
		return ErrNoDevice
	}
	if _, err := s.propose(ctx, wire.CmdPushDeviceDel, deviceDelCmd{UID: uid, Platform: platform, Token: token}); err != nil {
		return fmt.Errorf("push: remove token: %w", err)
	}
	s.log.Info("push token removed", "platform", platform, "token", shortToken(token))
	return nil
}

// Mute mutes a conversation for uid, until the given time (nil: until
// unmuted). A repeated mute replaces the previous one.
func (s *Service) Mute(ctx context.Context, uid, conv string, until *time.Time) (Mute, error) {
	if err := ValidConversation(conv); err != nil {
		return Mute{}, err
	}
	now := s.now().UTC()
	if until != nil {
		u := until.UTC()
		if !u.After(now) {
			return Mute{}, ErrInvalidUntil
		}
		until = &u
	}
	v, err := s.propose(ctx, wire.CmdPushMute, muteCmd{UID: uid, Conv: conv, Until: until, At: now})
	if err != nil {
		return Mute{}, fmt.Errorf("push: mute: %w", err)
	}
	if m, ok := v.(muteSet); ok {
		return m.Mute, nil
	}
	return Mute{Conversation: conv, Until: until, MutedAt: now}, nil
}

// Unmute removes a mute; a conversation that is not muted is fine.
func (s *Service) Unmute(ctx context.Context, uid, conv string) error {
	if err := ValidConversation(conv); err != nil {
		return err
	}
	if _, err := s.propose(ctx, wire.CmdPushMute, muteCmd{UID: uid, Conv: conv, Delete: true, At: s.now().UTC()}); err != nil {
		return fmt.Errorf("push: unmute: %w", err)
	}
	return nil
}

// SettingsUpdate is a change of a user's push preferences: what it
// leaves unset keeps its stored value, so that a client that knows only
// the preview does not turn DND off.
type SettingsUpdate struct {
	// Preview is the new preview preference; nil keeps it.
	Preview *string
	// SetDND replaces the do-not-disturb window with DND, which nil turns
	// off; without SetDND the window stays (and DND is ignored).
	SetDND bool
	DND    *DND
}

// UpdateSettings changes uid's push preferences and returns them all.
// The change is merged into the stored settings by the FSM handler, so
// two changes of different settings never undo each other. Errors wrap
// ErrInvalidPreview, ErrInvalidDND or wire.ErrUnavailable. An update
// that changes nothing is not proposed.
func (s *Service) UpdateSettings(ctx context.Context, uid string, u SettingsUpdate) (Settings, error) {
	if u.Preview != nil {
		if err := ValidPreview(*u.Preview); err != nil {
			return Settings{}, err
		}
	}
	if !u.SetDND {
		u.DND = nil
	}
	if u.DND != nil {
		if err := u.DND.Validate(); err != nil {
			return Settings{}, err
		}
	}
	if u.Preview == nil && !u.SetDND {
		return s.Settings(uid)
	}
	v, err := s.propose(ctx, wire.CmdPushSettings, settingsCmd{UID: uid, Preview: u.Preview, SetDND: u.SetDND, DND: u.DND, At: s.now().UTC()})
	if err != nil {
		return Settings{}, fmt.Errorf("push: settings: %w", err)
	}
	if st, ok := v.(settingsSet); ok {
		return copySettings(st.Settings), nil
	}
	// The value did not survive a forwarded proposal: read back.
	return s.Settings(uid)
}

// SetPreview sets uid's preview preference, keeping the DND window.
func (s *Service) SetPreview(ctx context.Context, uid, preview string) (Settings, error) {
	return s.UpdateSettings(ctx, uid, SettingsUpdate{Preview: &preview})
}

// SetDND sets uid's do-not-disturb window (nil turns it off), keeping
// the preview preference.
func (s *Service) SetDND(ctx context.Context, uid string, d *DND) (Settings, error) {
	return s.UpdateSettings(ctx, uid, SettingsUpdate{SetDND: true, DND: d})
}

// Devices lists uid's registered devices, in device-ID order.
func (s *Service) Devices(uid string) ([]Device, error) {
	out, gen, ok := s.devices.get(uid)
	if ok {
		return slices.Clone(out), nil
	}
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixDevice + uid + "/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var d Device
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &d) }); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("push: read devices: %w", err)
	}
	s.devices.put(uid, slices.Clone(out), gen)
	return out, nil
}

// Device reads one of uid's devices; ErrNoDevice when not registered.
func (s *Service) Device(uid, device string) (Device, error) {
	var d Device
	var found bool
	err := s.db.View(func(tx *badger.Txn) (err error) {
		found, err = fsm.GetJSON(tx, deviceKey(uid, device), &d)
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("push: read device: %w", err)
	}
	if !found {
		return Device{}, fmt.Errorf("%w: %s/%s", ErrNoDevice, uid, device)
	}
	return d, nil
}

// DeviceByToken finds the device that holds a token (for Web Push, an
// endpoint); ErrNoDevice when none does.
func (s *Service) DeviceByToken(platform, token string) (Device, error) {
	var holder string
	err := s.db.View(func(tx *badger.Txn) (err error) {
		holder, err = tokenHolder(tx, tokenKey(platform, token))
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("push: read token: %w", err)
	}
	uid, device, ok := strings.Cut(holder, "/")
	if !ok {
		return Device{}, ErrNoDevice
	}
	return s.Device(uid, device)
}

// Mutes lists uid's mutes that are in force at `at`, in conversation order.
func (s *Service) Mutes(uid string, at time.Time) ([]Mute, error) {
	p, err := s.prefs(uid)
	if err != nil {
		return nil, err
	}
	return mutesInForce(p.mutes, at), nil
}

// IsMuted reports whether uid muted conv (DirectConversation(peer) or
// GroupConversation(gid)) at the given time.
func (s *Service) IsMuted(uid, conv string, at time.Time) (bool, error) {
	var m Mute
	var found bool
	err := s.db.View(func(tx *badger.Txn) (err error) {
		found, err = fsm.GetJSON(tx, muteKey(uid, conv), &m)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("push: read mute: %w", err)
	}
	return found && (m.Until == nil || at.Before(*m.Until)), nil
}

// Settings reads uid's push preferences (the defaults when never set).
func (s *Service) Settings(uid string) (Settings, error) {
	p, err := s.prefs(uid)
	if err != nil {
		return Settings{Preview: PreviewFull}, err
	}
	return copySettings(p.settings), nil
}

// Preview is uid's preview preference: PreviewFull (the default),
// PreviewSender or PreviewNone.
func (s *Service) Preview(uid string) (string, error) {
	st, err := s.Settings(uid)
	return st.Preview, err
}

// DND returns uid's do-not-disturb window (see DND: clock times since
// local midnight and the offset east of UTC); ok is false when DND is
// off. The bridge asks it when it decides whether to push, hence the
// flat values (it keeps its own DND type).
func (s *Service) DND(uid string) (from, to, utcOffset time.Duration, ok bool, err error) {
	st, err := s.Settings(uid)
	if err != nil || st.DND == nil {
		return 0, 0, 0, false, err
	}
	return st.DND.From, st.DND.To, st.DND.UTCOffset, true, nil
}

// VAPIDKeys returns the cluster's Web Push key pair, base64url: the
// public key as an uncompressed P-256 point (the applicationServerKey
// browsers want) and the private key as its 32-byte scalar.
// ErrNoVAPIDKey until the key is replicated (see Run).
func (s *Service) VAPIDKeys() (public, private string, err error) {
	var c vapidCmd
	var found bool
	err = s.db.View(func(tx *badger.Txn) (err error) {
		found, err = fsm.GetJSON(tx, []byte(keyVAPID), &c)
		return err
	})
	if err != nil {
		return "", "", fmt.Errorf("push: read vapid key: %w", err)
	}
	if !found {
		return "", "", ErrNoVAPIDKey
	}
	return c.Public, c.Private, nil
}

// checkVAPID verifies that a key pair is a P-256 key and its public key.
func checkVAPID(c vapidCmd) error {
	d, err := base64.RawURLEncoding.DecodeString(c.Private)
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	k, err := ecdh.P256().NewPrivateKey(d)
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	if base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()) != c.Public {
		return errors.New("public key does not match the private key")
	}
	return nil
}

func newVAPID() (vapidCmd, error) {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return vapidCmd{}, fmt.Errorf("push: generate vapid key: %w", err)
	}
	return vapidCmd{Private: base64.RawURLEncoding.EncodeToString(k.Bytes()),
		Public: base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes())}, nil
}

// EnsureVAPID proposes a new key pair unless one is replicated already.
// Nodes may race: the first proposal applied wins, and every node ends
// with the same key.
func (s *Service) EnsureVAPID(ctx context.Context) error {
	if _, _, err := s.VAPIDKeys(); err == nil {
		return nil
	}
	c, err := newVAPID()
	if err != nil {
		return err
	}
	v, err := s.propose(ctx, wire.CmdPushVAPID, c)
	if err != nil {
		return fmt.Errorf("push: replicate vapid key: %w", err)
	}
	if got, ok := v.(vapidCmd); ok && got.Public == c.Public {
		s.log.Info("web push (VAPID) key generated", "public", c.Public)
	}
	return nil
}

// Run makes sure the cluster has a VAPID key, retrying while the cluster
// cannot commit, and returns once it has (or ctx is done).
func (s *Service) Run(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for {
		err := s.EnsureVAPID(ctx)
		if err == nil {
			return nil
		}
		s.log.Debug("vapid key not replicated yet; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// sortedPlatforms lists the enabled platforms.
func (s *Service) sortedPlatforms() []string {
	var out []string
	for p := range s.enabled {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
