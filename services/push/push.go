// Package push owns the data side of edgechat's push notifications: the
// devices users register for APNs, FCM and Web Push, the conversations
// they muted, their preview preference and do-not-disturb window, the
// large groups they opted in to, the cluster's Web Push (VAPID) key
// pair, and the outbox of messages with pushes still to decide. It does
// not send anything: the push bridge reads what it needs through
// Devices, Mutes, Preview, DND, GroupOptIns, VAPIDKeys and the outbox
// (EachQueued, Handled), records its progress with RecordProgress and
// removes dead tokens with RemoveToken.
//
// All of it is replicated state: changes go through the Raft log
// (Proposer) and are applied by this package's FSM handlers under the
// key prefix "r/push/"; reads go to the local Badger database.
//
// Keys under r/push/:
//
//	d/{uid}/{device}          Device JSON
//	t/{platform}/{sha256(token)} "{uid}/{device}" (a token is held by one device)
//	m/{uid}/{conversation}    Mute JSON
//	s/{uid}                   Settings JSON (preview, dnd)
//	o/{gid}/{uid}             GroupOptIn JSON (the bridge lists a group's opt-ins with one scan)
//	oi/{uid}/{gid}            the same GroupOptIn, by user (for listing and the cap)
//	vapid                     the VAPID key pair (first proposal wins)
//	q/{id}                    a message in the outbox (pushes to decide; outbox.go)
//	h/{id}{uid}/{device}      a device handled for a message in the outbox
//	u/{id}{uid}/{device}      a connected device that did not acknowledge the message (unacked.go)
package push

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Proposer appends a command to the replicated log and returns the value
// or error of its FSM handler (implemented by *cluster.Raft).
type Proposer interface {
	Propose(ctx context.Context, t byte, payload []byte) (any, error)
}

// Registrar installs FSM handlers (implemented by *fsm.FSM).
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

// Sentinel errors; HTTP handlers map them to stable codes.
var (
	ErrDisabled            = errors.New("push: provider not configured on this cluster")
	ErrInvalidDevice       = errors.New("push: invalid device ID")
	ErrInvalidPlatform     = errors.New("push: invalid platform")
	ErrInvalidToken        = errors.New("push: invalid push token")
	ErrInvalidSubscription = errors.New("push: invalid web push subscription")
	ErrInvalidConversation = errors.New("push: invalid conversation")
	ErrInvalidPreview      = errors.New("push: invalid preview preference")
	ErrInvalidDND          = errors.New("push: invalid do-not-disturb window")
	ErrInvalidUntil        = errors.New("push: mute end is not in the future")
	ErrTooManyDevices      = errors.New("push: too many devices")
	ErrTooManyMutes        = errors.New("push: too many muted conversations")
	ErrInvalidGroup        = errors.New("push: invalid group ID")
	ErrTooManyOptIns       = errors.New("push: too many group opt-ins")
	ErrNoDevice            = errors.New("push: no such device")
	ErrNoVAPIDKey          = errors.New("push: the VAPID key is not replicated yet")
	errBadCommand          = errors.New("push: malformed command")
)

// Deps are what the service needs from the node.
type Deps struct {
	DB       *badger.DB
	Proposer Proposer
	FSM      Registrar
	// Enabled are the platforms whose provider is configured (PlatformAPNs,
	// PlatformFCM, PlatformWebPush); registering for another answers
	// ErrDisabled.
	Enabled []string
	// SignedIn tells whether a registration's sign-in session is live
	// (services/auth); nil: every registration is. At the limit of
	// MaxDevices, registrations whose session has ended give way.
	SignedIn SignedIn
	Logger   *slog.Logger     // nil: slog.Default()
	Now      func() time.Time // nil: time.Now
}

// SignedIn tells whether uid's device, whose registration the sign-in
// session `session` made ("" for none), is still signed in.
type SignedIn interface {
	DeviceSignedIn(uid, device, session string) (bool, error)
}

// restorer is the part of *fsm.FSM that tells of snapshot restores.
type restorer interface{ OnRestore(fn func()) }

// Service is the push data service of one node.
type Service struct {
	db       *badger.DB
	proposer Proposer
	enabled  map[string]bool
	signedIn SignedIn
	log      *slog.Logger
	now      func() time.Time
	out      outbox
	holders  deviceHolders
	devices  deviceCache // Devices' reads
	// prefsCache: Mutes', Settings' (Preview's, DND's) reads.
	prefsCache prefsCache
}

// New registers the FSM handlers.
func New(deps Deps) (*Service, error) {
	if deps.DB == nil || deps.Proposer == nil || deps.FSM == nil {
		return nil, errors.New("push: Deps.DB, Deps.Proposer and Deps.FSM are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Service{db: deps.DB, proposer: deps.Proposer, enabled: map[string]bool{}, signedIn: deps.SignedIn,
		log: deps.Logger.With("service", "push"), now: deps.Now}
	for _, p := range deps.Enabled {
		s.enabled[p] = true
	}
	if err := s.holders.load(s.db); err != nil {
		return nil, err
	}
	if r, ok := deps.FSM.(restorer); ok {
		r.OnRestore(func() {
			s.devices.purge()
			s.prefsCache.purge()
			if err := s.holders.load(s.db); err != nil {
				// Restore runs on the FSM's goroutine and cannot fail
				// here; the node's database is then unreadable anyway.
				s.log.Error("reloading device holders after a restore", "err", err)
			}
		})
	}
	deps.FSM.Register(wire.CmdPushDevicePut, s.applyDevicePut)
	deps.FSM.Register(wire.CmdPushDeviceDel, s.applyDeviceDel)
	deps.FSM.Register(wire.CmdPushMute, s.applyMute)
	deps.FSM.Register(wire.CmdPushSettings, s.applySettings)
	deps.FSM.Register(wire.CmdPushVAPID, s.applyVAPID)
	deps.FSM.Register(wire.CmdPushProgress, s.applyProgress)
	deps.FSM.Register(wire.CmdPushGroupOptIn, s.applyOptIn)
	deps.FSM.Register(wire.CmdPushUnacked, s.applyUnacked)
	return s, nil
}

// Enabled reports whether the provider of platform is configured.
func (s *Service) Enabled(platform string) bool { return s.enabled[platform] }

// shortToken is what logs show of a token: its last 6 characters.
func shortToken(tok string) string {
	if len(tok) <= 6 {
		return "…"
	}
	return "…" + tok[len(tok)-6:]
}
