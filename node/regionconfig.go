package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/bridge/region"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/certfile"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/users"
)

// DefaultRegion is the region of a node started without --region.
const DefaultRegion = "local"

var regionSettings = []setting{
	{name: "region", usage: "this cluster's region name (letters, digits, -): users of other regions address its users as name@region", set: stringSetter(func(c *Config) *string { return &c.Region })},
	{name: "region-number", usage: "this region's number, 0 to 15, different in every linked region: the top 4 bits of the Snowflake machine number, so message IDs are unique across regions (0 keeps single-region IDs as they were)", set: intSetter(func(c *Config) *int { return &c.RegionNumber })},
	{name: "link", usage: "a link to another region: NAME=URL of its MQTT listener (tcp:// or tls://) or of its MQTT over WebSocket (wss://HOST[:PORT]/mqtt, ws:// on trusted networks); repeatable (env: comma-separated)", repeat: true, set: listSetter(func(c *Config) *[]string { return &c.Links })},
	{name: "link-retention", usage: "drop messages queued for another region longer than this (they never reach it; counted and logged) so a dead link cannot fill the disk", set: durationSetter(func(c *Config) *time.Duration { return &c.LinkRetention })},
	{name: "link-backlog-warn", usage: "warn in /readyz when a link's oldest queued message is older than this", set: durationSetter(func(c *Config) *time.Duration { return &c.LinkBacklogWarn })},
	{name: "link-secret-file", usage: "the links' shared secret: one line for every link, or NAME=SECRET lines (at least 16 bytes each; further lines for a link are secrets also accepted, for rotation); optional with --link-ca and --link-cert", set: stringSetter(func(c *Config) *string { return &c.LinkSecretFile })},
	{name: "link-ca", usage: "CA certificates (PEM) that sign the other regions' link certificates: the TLS listeners ask links (ALPN edgechat-link) for client certificates and accept a link whose certificate names its region (SAN DNS name, or CN without DNS names) without a secret; needs --tls-cert", set: stringSetter(func(c *Config) *string { return &c.LinkCA })},
	{name: "link-cert", usage: "this region's link client certificate (PEM), presented to the other regions over tls:// and wss://; with --link-key", set: stringSetter(func(c *Config) *string { return &c.LinkCert })},
	{name: "link-key", usage: "the private key (PEM) of --link-cert", set: stringSetter(func(c *Config) *string { return &c.LinkKey })},
}

// validateRegion checks --region and the links (not the secret file's
// content, read when the node is built).
func (c Config) validateRegion() error {
	if err := address.ValidRegion(c.Region); err != nil {
		return fmt.Errorf("%w: --region %q: letters, digits and -, 1 to %d", ErrConfig, c.Region, address.MaxRegionLen)
	}
	if c.RegionNumber < 0 || c.RegionNumber > region.MaxRegionNumber {
		return fmt.Errorf("%w: --region-number %d: want 0 to %d", ErrConfig, c.RegionNumber, region.MaxRegionNumber)
	}
	seen := map[string]bool{}
	for _, s := range c.Links {
		l, err := region.ParseLink(s)
		if err != nil {
			return fmt.Errorf("%w: --link: %v", ErrConfig, err)
		}
		if l.Name == c.Region {
			return fmt.Errorf("%w: --link %s: that is this region", ErrConfig, l.Name)
		}
		if seen[l.Name] {
			return fmt.Errorf("%w: --link %s given twice", ErrConfig, l.Name)
		}
		seen[l.Name] = true
	}
	if c.LinkRetention <= 0 {
		return fmt.Errorf("%w: --link-retention %v: want a positive duration", ErrConfig, c.LinkRetention)
	}
	if c.LinkBacklogWarn <= 0 {
		return fmt.Errorf("%w: --link-backlog-warn %v: want a positive duration", ErrConfig, c.LinkBacklogWarn)
	}
	if (c.LinkCert == "") != (c.LinkKey == "") {
		return fmt.Errorf("%w: --link-cert and --link-key go together", ErrConfig)
	}
	if c.LinkCA != "" && c.TLSCert == "" {
		return fmt.Errorf("%w: --link-ca needs --tls-cert (the TLS listeners verify the links' certificates)", ErrConfig)
	}
	if len(c.Links) > 0 && c.LinkSecretFile == "" && (c.LinkCA == "" || c.LinkCert == "") {
		return fmt.Errorf("%w: --link needs --link-secret-file, or --link-ca with --link-cert and --link-key", ErrConfig)
	}
	return nil
}

// linkCA reads --link-ca; nil without one.
func (c Config) linkCA() (*x509.CertPool, error) {
	if c.LinkCA == "" {
		return nil, nil
	}
	data, err := os.ReadFile(c.LinkCA)
	if err != nil {
		return nil, fmt.Errorf("%w: --link-ca: %v", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%w: --link-ca %s: no PEM certificate", ErrConfig, c.LinkCA)
	}
	return pool, nil
}

// linkTLS is the TLS client configuration of the links: LinkTLS (tests)
// or the system's roots, with --link-cert presented.
func (c Config) linkTLS(log *slog.Logger) (*tls.Config, error) {
	cfg := c.LinkTLS.Clone()
	if c.LinkCert == "" {
		return cfg, nil
	}
	// Renewed files are presented from the next link connection on
	// (internal/certfile).
	pair, err := certfile.Load(c.LinkCert, c.LinkKey, c.CertReloadEvery, log)
	if err != nil {
		return nil, fmt.Errorf("%w: --link-cert/--link-key: %v", ErrConfig, err)
	}
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg.GetClientCertificate = pair.GetClientCertificate
	return cfg, nil
}

// regionLinks reads the links with their secrets.
func (c Config) regionLinks() ([]region.Link, error) {
	if len(c.Links) == 0 {
		return nil, nil
	}
	var links []region.Link
	var names []string
	for _, s := range c.Links {
		l, err := region.ParseLink(s)
		if err != nil {
			return nil, err
		}
		links = append(links, l)
		names = append(names, l.Name)
	}
	if c.LinkSecretFile == "" {
		return links, nil // certificates only (validateRegion)
	}
	data, err := os.ReadFile(c.LinkSecretFile)
	if err != nil {
		return nil, fmt.Errorf("%w: --link-secret-file: %v", ErrConfig, err)
	}
	secrets, err := region.ParseSecrets(data, names)
	if err != nil {
		return nil, err
	}
	for i := range links {
		all := secrets[links[i].Name]
		links[i].Secret, links[i].AlsoAccepted = all[0], all[1:]
	}
	return links, nil
}

// buildRegion builds the region bridge (before the archive, which stages
// messages to other regions in its outboxes).
func (n *Node) buildRegion() error {
	links, err := n.cfg.regionLinks()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	linkTLS, err := n.cfg.linkTLS(n.log)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	linkCA, err := n.cfg.linkCA()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.Region, err = region.New(region.Config{Region: n.cfg.Region, Number: n.cfg.RegionNumber, Links: links, TLS: linkTLS, LinkCA: linkCA, Node: n.cfg.NodeID,
		Retention: n.cfg.LinkRetention, BacklogWarn: n.cfg.LinkBacklogWarn, Window: n.cfg.LinkWindow, MaxBatch: n.cfg.LinkMaxBatch},
		region.Deps{DB: n.db, FSM: n.fsm, Proposer: n.raft, Leadership: n.raft, Store: remoteStore{n},
			Publisher: n.link, Registerer: n.registry, Logger: n.log, Mirrors: mirrors{n}, GroupStore: remoteStore{n},
			Routes: n.routes, Blocks: n.Users, Profiles: n.Users, Relations: n.Users, Undeliverables: remoteStore{n}, Erasures: n.Auth,
			Media: n.Media})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.Media.SetRemote(n.Region) // media of other regions is fetched over the links
	n.Users.SetRegions(n.Region)
	n.Users.SetRemoteProfiles(n.Region)
	var _ users.FreshRemoteProfiles = n.Region      // a contact asks the other region, not only the cache
	n.Users.SetRelationHook(n.Region.StageRelation) // contacts and blocks of other regions' users
	// A committed change of a group of ours stages its state for the
	// regions with members (bridge/region groups.go).
	n.Users.SetGroupHook(func(tx *badger.Txn, gid string) (func(), error) {
		regions, err := users.MemberRegions(tx, gid)
		if err != nil {
			return nil, err
		}
		st, _, err := users.GroupState(tx, gid)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(st)
		if err != nil {
			return nil, err
		}
		return n.Region.StageGroupState(tx, gid, regions, b)
	})
	return nil
}

// mirrors commits the state of another region's group.
type mirrors struct{ n *Node }

func (m mirrors) ApplyMirror(ctx context.Context, state []byte) error {
	var st users.RemoteGroup
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("node: group state: %v: %w", err, wire.ErrInvalid)
	}
	return m.n.Users.ApplyMirror(ctx, st)
}

// LeaveRemote commits a member of another region's leave of a group of
// ours (bridge/region groupleave.go).
func (m mirrors) LeaveRemote(ctx context.Context, gid, uid string, seq uint64) error {
	return m.n.Users.LeaveRemote(ctx, gid, uid, seq)
}

// remoteStore is the archive as the region bridge stores into it (built
// after the bridge).
type remoteStore struct{ n *Node }

func (s remoteStore) StoreRemote(ctx context.Context, env wire.Envelope) (wire.Envelope, []byte, bool, error) {
	return s.n.Archive.StoreRemote(ctx, env)
}

// DeliversCommitted: every node delivers what the archive stores.
func (s remoteStore) DeliversCommitted() bool { return s.n.Archive.DeliversCommitted() }

func (s remoteStore) MarkUndeliverable(ctx context.Context, id snowflake.ID, from, to, reason string) error {
	return s.n.Archive.MarkUndeliverable(ctx, id, from, to, reason)
}

func (s remoteStore) MarkGroupUndeliverable(ctx context.Context, id snowflake.ID, from, group, reason string) error {
	return s.n.Archive.MarkGroupUndeliverable(ctx, id, from, group, reason)
}

func (s remoteStore) StartRemote(ctx context.Context, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	return s.n.Archive.StartRemote(ctx, env)
}

// MarkRemoteRead records how far a user of another region read (region.RemoteReads).
func (s remoteStore) MarkRemoteRead(ctx context.Context, reader, peer string, upTo snowflake.ID) error {
	return s.n.Archive.MarkRemoteRead(ctx, reader, peer, upTo)
}

func (s remoteStore) StoreRemoteGroup(ctx context.Context, env wire.Envelope) (wire.Envelope, []byte, bool, error) {
	return s.n.Archive.StoreRemoteGroup(ctx, env)
}

// outboxes stages each stored message in the push outbox and, for a
// user of another region, in that region's link outbox.
type outboxes struct {
	push   pushStaging
	region *region.Bridge
}

func (o outboxes) Stage(tx *badger.Txn, m archive.Stored) (func(), error) {
	after, err := o.push.Stage(tx, m)
	if err != nil || m.Group == "" && strings.IndexByte(m.To, '@') < 0 {
		return after, err
	}
	var linkAfter func()
	if m.Group != "" {
		linkAfter, err = o.region.StageGroupMessage(tx, m.Group, m.From, m.Payload)
	} else {
		linkAfter, err = o.region.Stage(tx, m.To, m.Payload)
	}
	if err != nil || linkAfter == nil {
		return after, err
	}
	if after == nil {
		return linkAfter, nil
	}
	return func() { after(); linkAfter() }, nil
}

// machineNumber is the Snowflake machine number of a node whose cluster
// gave it number m: region number << 6 | m, so that IDs are unique across
// linked regions. A region that is linked or numbered holds cluster
// numbers up to 63 only; a single region without links keeps 1..1023 and
// its IDs as they were.
func (c Config) machineNumber(m uint16) (uint16, error) {
	if (c.RegionNumber > 0 || len(c.Links) > 0) && m > region.MaxClusterMachine {
		return 0, fmt.Errorf("%w: this node's cluster machine number is %d: with --region-number or --link a cluster may have registered at most %d node names (region number << 6 | cluster number must fit the 10 machine bits)",
			ErrConfig, m, region.MaxClusterMachine)
	}
	return region.MachineNumber(c.RegionNumber, m), nil
}
