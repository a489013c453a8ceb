// Package auth owns edgechat's built-in accounts: registration with
// argon2id password hashes, login with per-user and per-IP rate limits,
// EdDSA (Ed25519) access tokens, rotating refresh tokens with reuse
// detection, and the JWKS of the node's signing keys.
//
// Accounts and refresh-token families are replicated state: every change
// goes through the Raft log (Proposer) and is applied by this package's
// FSM handlers under the key prefix "r/auth/". Reads go straight to the
// local Badger database.
//
// An account deleted by its user (DELETE /user/me) is disabled at once
// and erased after a grace period by replicated steps in which every
// owner of the user's data deletes its own keys (delete.go); its user ID
// stays reserved.
package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/ratelimit"
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

// ProfileCreator makes the profile of a new account (implemented by
// *users.Service).
type ProfileCreator interface {
	CreateProfile(ctx context.Context, uid, displayName string) error
}

// The gateway and the broker verify tokens through this method set.
var _ interface {
	VerifyAccessToken(token string) (wire.Principal, error)
} = (*Service)(nil)

// Sentinel errors; HTTP handlers map them to stable codes.
var (
	ErrUsernameTaken = errors.New("auth: username taken")
	// ErrKeyReused: a sign-up's Idempotency-Key sent again with another
	// request (another password).
	ErrKeyReused          = errors.New("auth: idempotency key used for another request")
	ErrInvalidUsername    = errors.New("auth: invalid username")
	ErrInvalidPassword    = errors.New("auth: invalid password")
	ErrInvalidDisplayName = wire.ErrInvalidDisplayName
	ErrInvalidCredentials = errors.New("auth: invalid username or password")
	ErrRateLimited        = errors.New("auth: too many failed logins")
	ErrRefreshInvalid     = errors.New("auth: refresh token unknown, expired or revoked")
	ErrRefreshReused      = errors.New("auth: refresh token reused; family revoked")
	ErrNoAccount          = errors.New("auth: no such account")
	ErrInvalidDevice      = errors.New("auth: invalid device ID")
	// ErrPasswordLoginOff: registration and password login are turned off.
	ErrPasswordLoginOff = errors.New("auth: password login is turned off; sign in through an identity provider")
)

// RateLimitError carries how long a rate-limited caller should wait.
type RateLimitError struct{ RetryAfter time.Duration }

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v (retry after %v)", ErrRateLimited, e.RetryAfter)
}

// Unwrap lets errors.Is(err, ErrRateLimited) match.
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// Argon2Params are the argon2id cost parameters for new hashes. Existing
// hashes keep the parameters recorded in their PHC string.
type Argon2Params struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
	SaltLen   uint32
	KeyLen    uint32
}

// DefaultArgon2 is the OWASP recommendation (m=19 MiB, t=2, p=1).
var DefaultArgon2 = Argon2Params{MemoryKiB: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Config configures the service; zero fields take defaults.
type Config struct {
	KeyDir     string        // signing keys persisted here; required
	Issuer     string        // "iss" of access tokens; default "edgechat"
	AccessTTL  time.Duration // default 15m
	RefreshTTL time.Duration // default 30 days
	Argon2     Argon2Params  // default DefaultArgon2
	// Failed logins per username and per client IP (ratelimit.IPKey);
	// zero: DefaultLoginPerUser, DefaultLoginPerIP. Only failures take
	// tokens; a key with none left is refused before a password is hashed.
	LoginPerUser ratelimit.Spec
	LoginPerIP   ratelimit.Spec
	// DeleteGrace is how long a deleted account stays disabled before
	// its data is erased; 0 erases at once (no default here: the node's
	// --account-delete-grace has one).
	DeleteGrace time.Duration
	// NoPasswordLogin refuses registration and password login over HTTP
	// (--password-login=false: users sign in through OIDC providers).
	NoPasswordLogin bool
}

// verifiedTokensMax bounds the cache of checked token signatures (about
// 300 bytes an entry).
const verifiedTokensMax = 16384

// Defaults.
const (
	DefaultIssuer     = "edgechat"
	DefaultAccessTTL  = 15 * time.Minute
	DefaultRefreshTTL = 30 * 24 * time.Hour
)

// Default login throttles: 5 failures a minute per username (burst 10),
// 20 a minute per client IP (burst 40).
var (
	DefaultLoginPerUser = ratelimit.Spec{Rate: 5.0 / 60, Burst: 10}
	DefaultLoginPerIP   = ratelimit.Spec{Rate: 20.0 / 60, Burst: 40}
)

// maxLimiterKeys bounds the memory of a login limiter under a flood of
// distinct usernames or addresses.
const maxLimiterKeys = 100_000

func (c *Config) setDefaults() error {
	if c.KeyDir == "" {
		return errors.New("auth: Config.KeyDir is required")
	}
	if c.Issuer == "" {
		c.Issuer = DefaultIssuer
	}
	if c.AccessTTL <= 0 {
		c.AccessTTL = DefaultAccessTTL
	}
	if c.RefreshTTL <= 0 {
		c.RefreshTTL = DefaultRefreshTTL
	}
	if c.Argon2.MemoryKiB == 0 || c.Argon2.Time == 0 {
		salt, key := c.Argon2.SaltLen, c.Argon2.KeyLen
		c.Argon2 = DefaultArgon2
		if salt != 0 {
			c.Argon2.SaltLen = salt
		}
		if key != 0 {
			c.Argon2.KeyLen = key
		}
	}
	if c.Argon2.Threads == 0 {
		c.Argon2.Threads = 1
	}
	if c.Argon2.SaltLen == 0 {
		c.Argon2.SaltLen = 16
	}
	if c.Argon2.KeyLen == 0 {
		c.Argon2.KeyLen = 32
	}
	if c.Argon2.SaltLen < 8 || c.Argon2.KeyLen < 16 {
		return errors.New("auth: argon2 salt must be >= 8 bytes and key >= 16 bytes")
	}
	if c.LoginPerUser.IsZero() {
		c.LoginPerUser = DefaultLoginPerUser
	}
	if c.LoginPerIP.IsZero() {
		c.LoginPerIP = DefaultLoginPerIP
	}
	return nil
}

// restorer is implemented by *fsm.FSM: the cache of existing accounts
// must be dropped when a snapshot replaces the state.
type restorer interface{ OnRestore(fn func()) }

// Deps are what the service needs from the node.
type Deps struct {
	DB       *badger.DB
	Proposer Proposer
	FSM      Registrar
	Profiles ProfileCreator // may be nil: no profile is created
	// DeviceLogout is told when a logout names its device (the push
	// service drops the device's registration); nil: nobody is told.
	DeviceLogout func(ctx context.Context, uid, device string) error
	// RegisteredDevices are uid's devices whose push registration one of
	// sessions made (by session ID): ending a session drops them too,
	// through DeviceLogout, also when its sign-in named no device. nil:
	// only the devices sessions named count.
	RegisteredDevices func(uid string, sessions map[string]bool) ([]string, error)
	Logger            *slog.Logger          // nil: slog.Default()
	Registerer        prometheus.Registerer // nil: metrics are not registered
	Now               func() time.Time      // nil: time.Now
	// Leader says whether this node proposes erase steps (RunErasure);
	// nil: always (a lone node, tests).
	Leader Leadership
	// ReadBarrier waits until this node has applied every write the
	// cluster committed before the call (cluster.Raft.ReadBarrier). A
	// credential this node does not know yet (an account created or a
	// refresh token issued or rotated through another node a moment ago)
	// is looked up again after it before being refused.
	// nil: the local state is trusted (a lone node, tests).
	ReadBarrier func(ctx context.Context) error
	// Publisher receives the session.created event of each sign-in for
	// user/{uid}/events (sessions.go); nil: no events.
	Publisher Publisher
}

// Publisher publishes server messages into the broker (implemented by
// the node's link to its broker).
type Publisher interface {
	Publish(o wire.Outbound) error
}

// Tokens is the answer of login and refresh.
type Tokens struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken,omitempty"` // empty when it went into the session cookie
	ExpiresIn    int    `json:"expiresIn"`              // seconds until the access token expires
	UserID       string `json:"userId"`
}

// Service is the auth service of one node.
type Service struct {
	cfg      Config
	db       *badger.DB
	proposer Proposer
	profiles ProfileCreator
	onLogout func(ctx context.Context, uid, device string) error
	regsOf   func(uid string, sessions map[string]bool) ([]string, error)
	pub      Publisher
	log      *slog.Logger
	now      func() time.Time

	keyset       atomic.Pointer[keySet] // replaced whole by a rotation (keyrotation.go)
	rotateMu     sync.Mutex             // one rotation at a time
	revoked      *revokedKeys           // every node's copy of r/auth/keyrevoked/
	onKeyRevoked []func(kid string)
	rekey        chan struct{}   // wakes Run: this node's key may be revoked
	verified     *verifiedTokens // signatures already checked (keys.go)
	// unknownKids bounds the catch-ups a token of an unknown key may cause.
	unknownKids *ratelimit.Limiter
	suspended   *suspendedSet // accounts an admin suspended (suspend.go)
	// ended and onSessionEnded: sessions ended one by one (sessions.go).
	ended          *endedSessions
	onSessionEnded []func(sid string)
	pubMu          sync.RWMutex
	pubCache       map[string]ed25519.PublicKey // keys other nodes published
	hasher         *hasher
	exists         *existsCache       // accounts known to exist (UserExists)
	perUser        *ratelimit.Limiter // failed logins by normalized username
	perIP          *ratelimit.Limiter // failed logins by ratelimit.IPKey
	// perProof: a signed-in user's wrong proofs (password change,
	// deletion, linking) by user ID, apart from perUser, so that
	// others' failed logins of the name do not lock the user out of
	// defending the account.
	perProof *ratelimit.Limiter
	// charged: failed sign-ins that took tokens of perUser and perIP,
	// so that one sent again with its Idempotency-Key takes none.
	charged *chargedSignIns

	logins        *prometheus.CounterVec
	registrations *prometheus.CounterVec
	refreshes     *prometheus.CounterVec

	// Account deletion (delete.go).
	gone       *goneSet
	lead       Leadership
	barrier    func(ctx context.Context) error
	wake       chan struct{}
	eraseMu    sync.Mutex
	erasers    []namedEraser
	onDisabled []func(uid string)
	// signedOut and onSignedOut: sign out everywhere (signout.go).
	signedOut   *signedOutSet
	onSignedOut []func(uid string)
	// demoted and onDemoted: when each user last lost the admin role,
	// and who is told once a revocation commits (demote.go).
	demoted   *signedOutSet
	onDemoted []func(uid string)

	providerCheck ProviderCheck // DELETE /user/me by a provider token (SetProviderCheck)
	deletions     *prometheus.CounterVec
	// passwordChanges counts POST /auth/password and admin resets by result.
	passwordChanges *prometheus.CounterVec
	eraseSteps      prometheus.Counter
	erased          prometheus.Counter
}

// New loads (or creates) the signing keys and registers the FSM handlers.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if deps.DB == nil || deps.Proposer == nil || deps.FSM == nil {
		return nil, errors.New("auth: Deps.DB, Deps.Proposer and Deps.FSM are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	perUser, err := ratelimit.New(ratelimit.Config{Spec: cfg.LoginPerUser, MaxKeys: maxLimiterKeys, Now: deps.Now})
	if err != nil {
		return nil, fmt.Errorf("auth: login limit per user: %w", err)
	}
	perIP, err := ratelimit.New(ratelimit.Config{Spec: cfg.LoginPerIP, MaxKeys: maxLimiterKeys, Now: deps.Now})
	if err != nil {
		return nil, fmt.Errorf("auth: login limit per IP: %w", err)
	}
	perProof, err := ratelimit.New(ratelimit.Config{Spec: cfg.LoginPerUser, MaxKeys: maxLimiterKeys, Now: deps.Now})
	if err != nil {
		return nil, fmt.Errorf("auth: proof limit per user: %w", err)
	}
	unknownKids, err := ratelimit.New(ratelimit.Config{Spec: unknownKidCatchUps, MaxKeys: 1, Now: deps.Now})
	if err != nil {
		return nil, fmt.Errorf("auth: login limit per IP: %w", err)
	}
	keys, err := loadOrCreateKeys(cfg.KeyDir)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg:         cfg,
		db:          deps.DB,
		proposer:    deps.Proposer,
		profiles:    deps.Profiles,
		onLogout:    deps.DeviceLogout,
		regsOf:      deps.RegisteredDevices,
		pub:         deps.Publisher,
		log:         deps.Logger.With("service", "auth"),
		now:         deps.Now,
		revoked:     newRevokedKeys(),
		rekey:       make(chan struct{}, 1),
		ended:       newEndedSessions(cfg.AccessTTL + verifyLeeway),
		verified:    newVerifiedTokens(verifiedTokensMax),
		suspended:   newSuspendedSet(),
		pubCache:    map[string]ed25519.PublicKey{},
		hasher:      newHasher(cfg.Argon2),
		exists:      newExistsCache(defaultExistsEntries),
		perUser:     perUser,
		perIP:       perIP,
		perProof:    perProof,
		charged:     newChargedSignIns(maxLimiterKeys),
		unknownKids: unknownKids,
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_auth_logins_total",
			Help: "Login attempts by result.",
		}, []string{"result"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_auth_registrations_total",
			Help: "Registration attempts by result.",
		}, []string{"result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_auth_refreshes_total",
			Help: "Refresh-token exchanges by result.",
		}, []string{"result"}),
		gone: newGoneSet(), signedOut: newSignedOutSet(), demoted: newTimeSet(prefixDemoted),
		lead: deps.Leader, barrier: deps.ReadBarrier,
		wake: make(chan struct{}, 1),
		deletions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_account_deletions_total",
			Help: "Account deletion requests (DELETE /user/me) by result.",
		}, []string{"result"}),
		passwordChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_password_changes_total",
			Help: "Password changes (POST /auth/password) and admin resets by result.",
		}, []string{"result"}),
		eraseSteps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_account_erase_steps_total",
			Help: "Erase steps of deleted accounts this node proposed (as the Raft leader).",
		}),
		erased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_accounts_erased_total",
			Help: "Deleted accounts whose erasure this node completed (as the Raft leader).",
		}),
	}
	s.keyset.Store(keys)
	if err := s.revoked.load(deps.DB); err != nil {
		return nil, err
	}
	if err := s.ended.load(deps.DB, s.now()); err != nil {
		return nil, err
	}
	if err := s.suspended.load(deps.DB); err != nil {
		return nil, err
	}
	if err := s.signedOut.load(deps.DB); err != nil {
		return nil, err
	}
	if err := s.demoted.load(deps.DB); err != nil {
		return nil, err
	}
	if err := s.gone.load(deps.DB); err != nil {
		return nil, err
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{s.logins, s.registrations, s.refreshes, s.deletions, s.passwordChanges, s.eraseSteps, s.erased} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("auth: register metrics: %w", err)
			}
		}
	}
	deps.FSM.Register(wire.CmdAccountCreate, applyAccountCreate)
	deps.FSM.Register(wire.CmdAccountUpdate, s.applyAccountUpdate)
	deps.FSM.Register(wire.CmdRefreshIssue, applyRefreshIssue)
	deps.FSM.Register(wire.CmdRefreshRevoke, s.applyRefreshRevoke)
	deps.FSM.Register(wire.CmdRefreshRevokeAll, s.applyRefreshRevokeAll)
	deps.FSM.Register(wire.CmdSigningKey, applySigningKey)
	deps.FSM.Register(wire.CmdSigningKeyRevoke, s.applySigningKeyRevoke)
	deps.FSM.Register(wire.CmdAuthPrune, s.applyAuthPrune)
	deps.FSM.Register(wire.CmdAccountDelete, s.applyAccountDelete)
	deps.FSM.Register(wire.CmdAccountErase, s.applyAccountErase)
	deps.FSM.Register(wire.CmdRemoteErase, s.applyRemoteErase)
	deps.FSM.Register(wire.CmdIdentitySignIn, applyIdentitySignIn)
	if r, ok := deps.FSM.(restorer); ok {
		r.OnRestore(s.exists.purge)
		r.OnRestore(func() {
			if err := s.gone.load(s.db); err != nil {
				s.log.Error("reloading deleted accounts after a snapshot restore", "err", err)
			}
			if err := s.signedOut.load(s.db); err != nil {
				s.log.Error("reloading sign-outs after a snapshot restore", "err", err)
			}
			if err := s.demoted.load(s.db); err != nil {
				s.log.Error("reloading admin role revocations after a snapshot restore", "err", err)
			}
			if err := s.revoked.load(s.db); err != nil {
				s.log.Error("reloading revoked signing keys after a snapshot restore", "err", err)
			}
			if err := s.ended.load(s.db, s.now()); err != nil {
				s.log.Error("reloading ended sessions after a snapshot restore", "err", err)
			}
			if err := s.suspended.load(s.db); err != nil {
				s.log.Error("reloading suspended accounts after a snapshot restore", "err", err)
			}
			s.wakeRekey() // the restored state may revoke this node's key
		})
	}
	s.log.Info("auth ready", "kid", keys.signer.kid, "keys", len(keys.byKID))
	return s, nil
}

// isErr reports whether err is target, also when the error crossed a
// process boundary as text (a proposal forwarded to the Raft leader may
// come back as a plain error carrying the handler's message).
func isErr(err, target error) bool {
	return err != nil && (errors.Is(err, target) || strings.Contains(err.Error(), target.Error()))
}

// joiners tells whether display names may hold joiners (wire.ZWJ), by
// the feature level committed on this node. The users service's FSM
// handler checks the profile's name again at its entry's level.
func (s *Service) joiners() bool { return featurelevel.Of(s.db) >= featurelevel.Joiners }
