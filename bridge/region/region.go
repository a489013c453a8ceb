// Package region links edgechat clusters of different regions (issue 14):
// a user is name inside their home region and name@region elsewhere, and
// a direct message to a user of another region is committed in the
// sender's region, then handed to the other region over an MQTT 5 link,
// durably and in commit order.
//
// Sending: the archive stores a message to bob@us like any other (the
// sender's PUBACK means committed here) and, in the same FSM
// transaction, Stage appends it to the outbox of region us (outbox.go).
// The Raft leader runs one link per configured region: a
// peerqueue.Persistent reads the outbox by position and publishes each
// message at QoS 1 (several to a publish on $link/{own}/batch, batch.go;
// one alone on $link/{own}/dm is accepted too; up to Config.Window
// publishes in flight, window.go) with the sender qualified
// (alice@eu), through a paho MQTT 5 client whose client ID and username
// are $link/{own} and whose password is the link's secret (link.go),
// over tcp://, tls://, or MQTT over WebSocket to the other region's
// gateway at /mqtt (wss://, ws://; wsconn.go); on TLS it presents this
// region's link certificate when one is configured (Config.TLS). The
// cursor moves only after the other region's PUBACK, through the Raft
// log (CmdRegionCursor), so a new leader resumes where the old one was
// acknowledged; a resend is deduplicated by the receiver.
//
// Receiving: the broker hands a link's connection to Authenticate (a
// client certificate the link CA verifies and that names the region, or
// else the secret, compared in constant time) and its publishes to Receive,
// which checks that the sender belongs to the link's region and the
// recipient to this one, stores the message through this region's Raft
// log with the origin's ID as the dedupe key (archive.StoreRemote),
// delivers it to the recipient's devices and returns: only then does the
// broker send the PUBACK.
package region

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/peerqueue"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Config of the region bridge.
type Config struct {
	Region string // this region's name
	// Number is this region's number (0..MaxRegionNumber), which every
	// linked region must not share (numbers.go).
	Number int
	Links  []Link // the other regions, each with its secret
	// TLS is the client configuration of tls:// and wss:// links
	// (RootCAs of the other regions' certificates; Certificates: this
	// region's link certificate, --link-cert); nil: the system's roots.
	TLS *tls.Config
	// LinkCA signs the other regions' link certificates (--link-ca):
	// a link that presents one, verified against it, naming its region,
	// is accepted without a secret (Authenticate). nil: secrets only.
	LinkCA *x509.CertPool
	// Timeout bounds one attempt to dial and connect, one publish's wait
	// for its PUBACK, and a cursor commit; default 10s. A batch of
	// MaxBatch messages may take MaxBatch times this.
	Timeout time.Duration
	// MaxBatch is how many messages a link reads from its outbox at
	// most at a time (a peerqueue batch; the cursor moves past each once
	// it is acknowledged); default 1024. They go several to a publish
	// (batch.go, at most 60 KiB each), up to Window publishes in flight
	// across batches (window.go, stream.go).
	MaxBatch int
	// Window is how many publishes a link has in flight at most;
	// default 16 (window.go, flow.go), and as many batches of
	// MaxBatch (stream.go). 1: each waits for the one before.
	Window int
	// BackoffMax is the longest pause between attempts of a link that
	// is down; default 5s.
	BackoffMax time.Duration
	// Node is this node's ID: its query connections are
	// $link/{region}/q/{Node} (profile.go); default "0".
	Node string
	// ProfileTTL is how long a profile of another region is cached;
	// default 5m.
	ProfileTTL time.Duration
	// SearchTimeout bounds the wait for each region's answer to a
	// search across regions (search.go); default DefaultSearchTimeout.
	SearchTimeout time.Duration
	// Retention: queued messages older than this are dropped (ops.go);
	// default DefaultRetention. ExpireEvery is how often the leader
	// looks; default min(Retention/4, 1m).
	Retention   time.Duration
	ExpireEvery time.Duration
	// BacklogWarn: a backlog older than this is a readiness warning;
	// default DefaultBacklogWarn.
	BacklogWarn time.Duration
}

// Registrar installs FSM handlers (*fsm.FSM).
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

// Leadership says whether this node runs the links (*cluster.Raft).
type Leadership interface {
	IsLeader() bool
	Barrier(ctx context.Context) error
	MembersChanged() <-chan struct{}
}

// Store commits a message that arrived over a link (the archive's
// StoreRemote).
type Store interface {
	StoreRemote(ctx context.Context, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error)
}

// Publisher delivers into the broker.
type Publisher interface {
	Publish(o wire.Outbound) error
}

// Deps are the bridge's collaborators; all are required but Registerer,
// Logger, Routes and Blocks.
type Deps struct {
	DB         *badger.DB
	FSM        Registrar
	Proposer   Proposer
	Leadership Leadership
	Store      Store
	Publisher  Publisher
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Mirrors and GroupStore carry groups across regions (groups.go);
	// nil: group traffic of links is refused.
	Mirrors    Mirrors
	GroupStore GroupStore
	// Routes is the region's subscriptions, its interest in users of
	// other regions (interest.go); nil: no presence crosses.
	Routes Routes
	// Blocks drops typing and receipts of a blocked user of another
	// region; nil: none.
	Blocks Blocks
	// Profiles answers other regions' profile requests; nil: no user
	// is found.
	Profiles Profiles
	// Relations and Undeliverables commit the notices links bring
	// (notices.go); nil: refused.
	Relations      Relations
	Undeliverables Undeliverables
	// Erasures commits the erasure of a user of another region that
	// user's region sent (erasure.go); nil: refused.
	Erasures Erasures
	// Media answers other regions' media chunk requests (media.go); nil:
	// no media is found.
	Media MediaSource
}

// Bridge is a region's links: the outboxes (on every node), the
// outbound links (on the leader) and the receiving end.
type Bridge struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	m     *metrics
	gm    *groupMetrics
	nm    *noticeMetrics
	pm    *peerqueue.Metrics
	links map[string]Link

	mu     sync.Mutex
	queues map[string]*peerqueue.Persistent[item] // while leading
	eph    map[string]*ephemeral                  // while leading
	stats  map[string]*linkStats                  // per link, for the life of the bridge
	q      queries
	reads  chan struct{} // read receipts of other regions' users being recorded (remoteread.go)
	// tellFailing: since when the leader's expiry could not tell the
	// senders of a link's expired messages (expirytold.go), by link.
	tellFailing map[string]time.Time
}

// New checks the configuration and registers the cursor command's FSM
// handler (before Raft applies entries).
func New(cfg Config, deps Deps) (*Bridge, error) {
	if err := address.ValidRegion(cfg.Region); err != nil {
		return nil, fmt.Errorf("%w: --region %q: %v", ErrConfig, cfg.Region, err)
	}
	if deps.DB == nil || deps.FSM == nil || deps.Proposer == nil || deps.Leadership == nil || deps.Store == nil || deps.Publisher == nil {
		return nil, errors.New("region: Deps: DB, FSM, Proposer, Leadership, Store and Publisher are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1024
	}
	if cfg.Window <= 0 {
		cfg.Window = linkWindow
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Second
	}
	if cfg.Number < 0 || cfg.Number > MaxRegionNumber {
		return nil, fmt.Errorf("%w: region number %d: want 0 to %d", ErrConfig, cfg.Number, MaxRegionNumber)
	}
	if cfg.ProfileTTL <= 0 {
		cfg.ProfileTTL = 5 * time.Minute
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.ExpireEvery <= 0 {
		cfg.ExpireEvery = min(cfg.Retention/4, time.Minute)
	}
	if cfg.SearchTimeout <= 0 {
		cfg.SearchTimeout = DefaultSearchTimeout
	}
	if cfg.BacklogWarn <= 0 {
		cfg.BacklogWarn = DefaultBacklogWarn
	}
	if cfg.Node == "" {
		cfg.Node = "0"
	}
	if strings.ContainsAny(cfg.Node, "/+#") {
		return nil, fmt.Errorf("%w: node ID %q", ErrConfig, cfg.Node)
	}
	links := map[string]Link{}
	for _, l := range cfg.Links {
		switch {
		case l.Name == cfg.Region:
			return nil, fmt.Errorf("%w: link %s names this region", ErrConfig, l.Name)
		case links[l.Name].Name != "":
			return nil, fmt.Errorf("%w: link %s configured twice", ErrConfig, l.Name)
		case l.Secret == "" && cfg.LinkCA != nil && len(l.AlsoAccepted) == 0:
			// certificates only
		case len(l.Secret) < MinSecretLen:
			return nil, fmt.Errorf("%w: link %s: secret missing or shorter than %d bytes", ErrConfig, l.Name, MinSecretLen)
		}
		for _, s := range l.AlsoAccepted {
			if len(s) < MinSecretLen {
				return nil, fmt.Errorf("%w: link %s: secret shorter than %d bytes", ErrConfig, l.Name, MinSecretLen)
			}
		}
		links[l.Name] = l
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Bridge{cfg: cfg, deps: deps, log: log.With("component", "region"), links: links, queues: map[string]*peerqueue.Persistent[item]{},
		eph: map[string]*ephemeral{}, stats: map[string]*linkStats{}, reads: make(chan struct{}, maxRemoteReads),
		q: queries{clients: map[string]*queryClient{}, cache: map[string]cachedProfile{}}}
	for name := range links {
		b.stats[name] = &linkStats{}
	}
	if deps.Routes != nil {
		deps.Routes.OnChange(b.routeChanged)
	}
	var err error
	if b.m, err = newMetrics(deps.Registerer, b); err != nil {
		return nil, err
	}
	if b.gm, err = newGroupMetrics(deps.Registerer); err != nil {
		return nil, err
	}
	if b.nm, err = newNoticeMetrics(deps.Registerer); err != nil {
		return nil, err
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if b.pm, err = peerqueue.NewMetrics(reg, "edgechat_region_link_queue", "Messages to another region"); err != nil {
		return nil, fmt.Errorf("region: metrics: %w", err)
	}
	deps.FSM.Register(wire.CmdRegionCursor, applyCursor)
	deps.FSM.Register(wire.CmdRegionExpire, applyExpire)   // ops.go
	deps.FSM.Register(wire.CmdRegionNotice, b.applyNotice) // notices.go
	return b, nil
}

// Local is this region's name.
func (b *Bridge) Local() string { return b.cfg.Region }

// Linked tells whether region is a configured link.
func (b *Bridge) Linked(region string) bool { _, ok := b.links[region]; return ok }

// Links lists the configured links' names, sorted.
func (b *Bridge) Links() []string {
	out := make([]string, 0, len(b.links))
	for n := range b.links {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Stage is the archive's outbox hook for a newly stored direct message:
// a message to name@region goes into region's outbox in the same
// transaction; the function returned wakes the link once it committed
// (nil for every other message).
func (b *Bridge) Stage(tx *badger.Txn, to string, payload []byte) (func(), error) {
	region, err := stage(tx, to, payload)
	if err != nil || region == "" {
		return nil, err
	}
	return func() { b.notify(region) }, nil
}

func (b *Bridge) notify(region string) {
	b.mu.Lock()
	q := b.queues[region]
	b.mu.Unlock()
	if q != nil {
		q.Notify()
	}
}

// Backlog is how many messages wait for region (committed here, not yet
// acknowledged there).
func (b *Bridge) Backlog(region string) (uint64, error) { return backlog(b.deps.DB, region) }

// Run runs the outbound links while this node leads, until ctx ends.
func (b *Bridge) Run(ctx context.Context) error {
	defer b.closeQueries()
	if len(b.links) == 0 {
		<-ctx.Done()
		return nil
	}
	for {
		changed := b.deps.Leadership.MembersChanged()
		if b.deps.Leadership.IsLeader() {
			bctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
			err := b.deps.Leadership.Barrier(bctx) // the last cursor commits applied here
			cancel()
			if err == nil {
				b.lead(ctx)
			} else {
				b.log.Debug("region links: barrier before leading failed", "err", err)
				select {
				case <-time.After(200 * time.Millisecond):
				case <-ctx.Done():
				}
			}
		} else {
			select {
			case <-changed:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// lead runs one persistent queue per link until leadership or ctx ends.
func (b *Bridge) lead(ctx context.Context) {
	var clients []*linkClient
	ectx, stopEph := context.WithCancel(ctx)
	var ephWG sync.WaitGroup
	for _, name := range b.Links() {
		l := b.links[name]
		lc := &linkClient{link: l, own: b.cfg.Region, number: b.cfg.Number, tls: b.cfg.TLS, log: b.log, m: b.m, gm: b.gm, dialTO: b.cfg.Timeout, stats: b.stats[name], retention: b.cfg.Retention, window: b.cfg.Window}
		lc.tellExpired = func(ctx context.Context, msgs []expiredMsg) error { return b.tellExpired(ctx, name, msgs) }
		eph := newEphemeral(b, lc)
		store := cursorStore{db: b.deps.DB, prop: b.deps.Proposer, region: name,
			timeout: func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, b.cfg.Timeout) }}
		// Up to Window batches in flight (stream.go), as many as publishes.
		q, err := peerqueue.NewPipelined(name, source{db: b.deps.DB, region: name}, store, lc.start, peerqueue.Config[item]{
			// An attempt is a whole batch, each message waiting for its
			// PUBACK in turn: a batch that cannot finish in time would be
			// resent for ever.
			Timeout: time.Duration(b.cfg.MaxBatch) * b.cfg.Timeout, MaxBatch: b.cfg.MaxBatch,
			BackoffMax: b.cfg.BackoffMax, Metrics: b.pm, Logger: b.log}, 1, 0, b.cfg.Window)
		if err != nil {
			b.log.Error("region link not started", "link", name, "err", err)
			continue
		}
		clients = append(clients, lc)
		b.mu.Lock()
		b.queues[name] = q
		b.eph[name] = eph
		b.mu.Unlock()
		ephWG.Add(1)
		go func() { defer ephWG.Done(); eph.run(ectx) }()
	}
	ephWG.Add(1)
	go func() { defer ephWG.Done(); b.runExpiry(ectx) }()
	b.log.Info("region links running on this node (leader)", "links", b.Links())
	for {
		changed := b.deps.Leadership.MembersChanged()
		if !b.deps.Leadership.IsLeader() {
			break
		}
		select {
		case <-ctx.Done():
		case <-changed:
			continue
		}
		break
	}
	stopEph()
	ephWG.Wait()
	b.mu.Lock()
	qs := b.queues
	b.queues = map[string]*peerqueue.Persistent[item]{}
	b.eph = map[string]*ephemeral{}
	b.mu.Unlock()
	for _, q := range qs {
		q.Close()
	}
	for _, q := range qs {
		q.Wait()
	}
	for _, lc := range clients {
		lc.close()
	}
	b.log.Info("region links stopped on this node")
}

// Authenticate checks the CONNECT of another region's link (the
// broker's Links): username $link/{region} of a configured link, client
// ID the same or, for a node's query connection, $link/{region}/q/{node}
// (profile.go), and the region number it tells (user property
// region-number), which must not be ours. The link proves it is region
// either with a client certificate (certs: the chain the peer presented
// in the TLS handshake, leaf first; none without one) that LinkCA verifies for client authentication
// and that names region — a SAN DNS name equal to region, or, in a
// certificate without DNS names, its subject CN — or, without a
// certificate, with its secret (compared in constant time). A
// certificate for another region, or one LinkCA does not verify, is
// refused even with the right secret.
func (b *Bridge) Authenticate(clientID, username string, password []byte, number string, certs []*x509.Certificate) (string, error) {
	region, ok := strings.CutPrefix(username, LinkPrefix)
	if ok && clientID != username {
		node, q := strings.CutPrefix(clientID, username+"/q/")
		ok = q && node != "" && !strings.ContainsAny(node, "/+#")
	}
	if !ok {
		b.m.auth.WithLabelValues("bad_id").Inc()
		return "", fmt.Errorf("region: link client ID %q and username %q: want both $link/{region}", clientID, username)
	}
	l, ok := b.links[region]
	if !ok {
		b.m.auth.WithLabelValues("unknown_region").Inc()
		return "", fmt.Errorf("region: %q is not a configured link", region)
	}
	switch {
	case len(certs) > 0 && b.cfg.LinkCA != nil:
		if err := certFor(certs, b.cfg.LinkCA, region); err != nil {
			b.m.auth.WithLabelValues("bad_cert").Inc()
			b.log.Warn("region link refused: certificate", "link", region, "subject", certs[0].Subject.String(), "dns", certs[0].DNSNames, "error", err)
			return "", fmt.Errorf("region: link %s: %w", region, err)
		}
	case l.Secret == "":
		b.m.auth.WithLabelValues("no_cert").Inc()
		b.log.Warn("region link refused: no certificate (this link has no secret)", "link", region)
		return "", fmt.Errorf("region: link %s: no client certificate", region)
	case !l.accepts(password):
		b.m.auth.WithLabelValues("bad_secret").Inc()
		b.log.Warn("region link refused: wrong secret", "link", region)
		return "", fmt.Errorf("region: link %s: wrong secret", region)
	}
	if err := b.checkNumber(region, number); err != nil {
		return "", err
	}
	b.m.auth.WithLabelValues("ok").Inc()
	return region, nil
}

// accepts tells whether password is one of the link's secrets (each
// compared in constant time, all of them every time).
func (l Link) accepts(password []byte) bool {
	ok := subtle.ConstantTimeCompare(password, []byte(l.Secret))
	for _, s := range l.AlsoAccepted {
		ok |= subtle.ConstantTimeCompare(password, []byte(s))
	}
	return ok == 1
}

// certFor checks that certs (leaf first, then intermediates) is a client
// certificate of ca's for region: a SAN DNS name region or, when it has
// no DNS names, the CN region.
func certFor(certs []*x509.Certificate, ca *x509.CertPool, region string) error {
	cert, inter := certs[0], x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("certificate not verified by the link CA: %v", err)
	}
	names := cert.DNSNames
	if len(names) == 0 {
		names = []string{cert.Subject.CommonName}
	}
	for _, n := range names {
		if asciiEqualFold(n, region) {
			return nil
		}
	}
	return fmt.Errorf("certificate names %q, not region %s", names, region)
}

// asciiEqualFold compares a certificate's name with a region's as DNS
// names compare: ASCII letters without regard to case, nothing else
// folded (strings.EqualFold would take the Kelvin sign for a k).
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// maxLinkEnvelope bounds a stored envelope a link forwards: as much as a
// link's packet holds. The client's 16 KiB limit does not do: the stored
// envelope writes each <, > and & of the body as a 6-byte escape, so a
// body of 4,000 '<' (a 4 KiB publish) is stored in 24 KiB, and the other
// region refused it for good. The body is still held to its 8 KiB.
const maxLinkEnvelope = 64 << 10

// remoteHead is what Receive reads of a forwarded envelope besides the
// client fields (wire.ParseEnvelopeWithin checks those).
type remoteHead struct {
	ID    snowflake.ID `json:"id"`
	From  string       `json:"from"`
	To    string       `json:"to"`
	Group string       `json:"group"`
}

// Receive handles one publish of region's link (the broker's Links): a
// direct message from a user of region to a user of this one, stored
// with the origin's ID, delivered, and only then acknowledged.
func (b *Bridge) Receive(ctx context.Context, region, topic string, payload []byte) error {
	b.stats[region].in(len(topic) + len(payload))
	switch topic {
	case DMTopic(region):
		wait, err := b.startDM(ctx, region, payload) // batch.go
		if err != nil {
			return err
		}
		return wait(ctx)
	case BatchTopic(region):
		return b.receiveBatch(ctx, region, payload) // batch.go
	}
	return b.receiveGroup(ctx, region, topic, payload) // groups.go
}

// check reads a link's publish: the topic of region's link, a valid
// envelope, a sender of region and a recipient of this one.
func (b *Bridge) check(region, topic string, payload []byte) (wire.Envelope, error) {
	if topic != DMTopic(region) {
		b.count(region, "invalid")
		return wire.Envelope{}, fmt.Errorf("region: link %s: topic %q (want %s): %w", region, topic, DMTopic(region), wire.ErrInvalid)
	}
	env, err := wire.ParseEnvelopeWithin(payload, maxLinkEnvelope)
	var head remoteHead
	if err == nil {
		err = json.Unmarshal(payload, &head)
	}
	if err == nil {
		err = withMedia(&env, payload) // media.go
	}
	if err != nil || head.ID == 0 || head.Group != "" {
		b.count(region, "invalid")
		return wire.Envelope{}, fmt.Errorf("region: link %s: not a direct message envelope with an id: %v: %w", region, err, wire.ErrInvalid)
	}
	from, ferr := address.Parse(head.From)
	if ferr != nil || from.Region != region || wire.ValidUserID(from.Name) != nil {
		b.count(region, "forged")
		b.log.Warn("region link: message refused: sender not of the link's region", "link", region, "from", head.From, "id", head.ID)
		return wire.Envelope{}, fmt.Errorf("region: link %s: sender %q is not a user of %s: %w", region, head.From, region, wire.ErrForbidden)
	}
	to, terr := address.Parse(head.To)
	if terr != nil || to.Region != b.cfg.Region || wire.ValidUserID(to.Name) != nil {
		b.count(region, "misrouted")
		return wire.Envelope{}, fmt.Errorf("region: link %s: recipient %q is not a user of %s: %w", region, head.To, b.cfg.Region, wire.ErrForbidden)
	}
	env.ID, env.From, env.To = head.ID, head.From, to.Name
	env.Mentions = localMentions(env.Mentions, b.cfg.Region, region) // mentions.go
	return env, nil
}

func resultOf(err error) string {
	switch {
	case errors.Is(err, wire.ErrForbidden):
		return "forbidden"
	case errors.Is(err, wire.ErrNotFound):
		return "no_such_user"
	case errors.Is(err, wire.ErrInvalid):
		return "invalid"
	}
	return "unavailable"
}

func (b *Bridge) count(region, result string) {
	b.m.received.WithLabelValues(region, result).Inc()
}
