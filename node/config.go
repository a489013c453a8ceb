package node

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgechat/edgechat/cluster"

	"go.yaml.in/yaml/v3"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/gateway"
)

// Config is the whole configuration of a node. It is filled from, in
// order of precedence: flags, EDGECHAT_* environment variables, the YAML
// file named by --config, and the defaults.
type Config struct {
	DataDir     string `yaml:"data"`
	HTTPAddr    string `yaml:"http_addr"`
	MQTTAddr    string `yaml:"mqtt_addr"`
	MQTTSAddr   string `yaml:"mqtts_addr"`
	TLSCert     string `yaml:"tls_cert"`
	TLSKey      string `yaml:"tls_key"`
	NodeID      string `yaml:"node_id"`
	ClusterAddr string `yaml:"cluster_addr"`
	// Cluster forming (see docs/operations.md "Forming a cluster").
	AdvertiseCluster string        `yaml:"advertise_cluster"` // address other nodes dial; default the bound address
	Join             []string      `yaml:"join"`              // cluster addresses of any members
	BootstrapExpect  int           `yaml:"bootstrap_expect"`  // form a new cluster of this many voters
	AdvertiseMQTT    string        `yaml:"advertise_mqtt"`    // public MQTT URL of this node, for /cluster/connect
	AdvertiseWS      string        `yaml:"advertise_ws"`      // public MQTT-over-WebSocket URL of this node
	Dev              bool          `yaml:"dev"`
	WebClient        bool          `yaml:"web_client"` // serve the browser app at / (off: API and MQTT only)
	AllowedOrigins   []string      `yaml:"allowed_origins"`
	TrustedProxies   []string      `yaml:"trusted_proxies"`
	Heartbeat        time.Duration `yaml:"heartbeat_interval"`
	PresenceGrace    time.Duration `yaml:"presence_grace"`
	// PresenceSeenEvery is how often presence writes the last seen of
	// users online or inactive to the replicated state, and retries a
	// write that did not commit (services/presence Config.SeenEvery).
	PresenceSeenEvery time.Duration `yaml:"presence_lastseen_every"`
	AccessTTL         time.Duration `yaml:"access_token_ttl"`
	LogLevel          string        `yaml:"log_level"`
	LogFormat         string        `yaml:"log_format"`
	// MQTT limits: "RATE/BURST" per second, or "off".
	MQTTPublishRate string `yaml:"mqtt_publish_rate"` // per user, all topics
	MQTTConnectRate string `yaml:"mqtt_connect_rate"` // connection attempts per client IP
	// subscriptions that add a route (a Raft commit), per user
	MQTTSubscribeRate string `yaml:"mqtt_subscribe_rate"`
	// MQTTConnectionsPerUser caps one user's live MQTT connections
	// (distinct client IDs) on a node; 0: no limit.
	MQTTConnectionsPerUser int `yaml:"mqtt_connections_per_user"`
	// HTTP limits of the gateway by class (auth, read, write, upload,
	// admin, probe; "all" is the per-client-IP bucket every request passes
	// first): "RATE/BURST" per second, or "off". Classes not named keep
	// the gateway's defaults; each source (file, env, flags) overrides only
	// the classes it names. See HTTPRateLimits.
	HTTPRate map[string]string `yaml:"http_rate"`
	// RaftTimeout is Raft's heartbeat and election timeout: a dead leader
	// is replaced after about twice this, and the leader heartbeats every
	// tenth of it. Longer saves idle CPU on small boxes (fewer heartbeats)
	// and costs failover time. Default 500 ms (0 also means the default).
	RaftTimeout time.Duration `yaml:"raft_timeout"`
	// NodeDownAfter is how long a member may not answer the leader before
	// it counts as down (still a member): the presence of the users it
	// homes moves to the members that are up, and back when it answers
	// again (cluster/down.go). 0: the default, 3 s (at least four Raft
	// timeouts).
	NodeDownAfter time.Duration `yaml:"node_down_after"`
	// AccountDeleteGrace is how long a deleted account (DELETE /user/me)
	// stays disabled before its data is erased; 0 erases at once.
	AccountDeleteGrace time.Duration `yaml:"account_delete_grace"`

	// Push providers and the push decision (docs/operations.md "Push");
	// see pushconfig.go. A provider with no configuration is off.
	APNsKeyFile        string        `yaml:"apns_key_file"`        // .p8 key (token auth)
	APNsKeyID          string        `yaml:"apns_key_id"`          // its key ID
	APNsTeamID         string        `yaml:"apns_team_id"`         // the Apple developer team ID
	APNsTopic          string        `yaml:"apns_topic"`           // the app's bundle ID
	APNsCertFile       string        `yaml:"apns_cert_file"`       // .p12 certificate (certificate auth)
	APNsCertPassword   string        `yaml:"apns_cert_password"`   // its password
	APNsEndpoint       string        `yaml:"apns_endpoint"`        // production, development or a URL
	FCMCredentialsFile string        `yaml:"fcm_credentials_file"` // service-account JSON
	FCMEndpoint        string        `yaml:"fcm_endpoint"`         // FCM HTTP v1 base URL
	WebPushSubject     string        `yaml:"webpush_subject"`      // VAPID subject: mailto: or https: (enables Web Push)
	PushGrace          time.Duration `yaml:"push_grace"`           // wait before pushing an offline device
	PushGroupLimit     int           `yaml:"push_group_limit"`     // groups above this push only mentions and replies
	// PushAckTimeout: a device connected when a message commits that has
	// not acknowledged its QoS 1 delivery by then is pushed as if offline
	// (a half-open connection); 0 turns it off (pushconfig.go).
	PushAckTimeout time.Duration `yaml:"push_ack_timeout"`
	// Regions (docs/regions.md); see regionconfig.go.
	Region         string   `yaml:"region"`           // this cluster's region name
	RegionNumber   int      `yaml:"region_number"`    // 0..15, unique among linked regions (Snowflake machine bits)
	Links          []string `yaml:"links"`            // NAME=URL of other regions' MQTT listeners
	LinkSecretFile string   `yaml:"link_secret_file"` // the links' secrets
	// Mutual TLS of the links: LinkCA signs the other regions' link
	// certificates (verified on the TLS listeners); LinkCert and LinkKey
	// are this region's, presented when dialling.
	LinkCA   string `yaml:"link_ca"`
	LinkCert string `yaml:"link_cert"`
	LinkKey  string `yaml:"link_key"`
	// LinkRetention: messages queued for another region longer than this
	// are dropped; LinkBacklogWarn: a backlog older than this is a
	// /readyz warning.
	LinkRetention   time.Duration `yaml:"link_retention"`
	LinkBacklogWarn time.Duration `yaml:"link_backlog_warn"`
	// Roles are the optional duties of this node (nil: all of them).
	Roles []string `yaml:"roles"`
	// Media (docs/operations.md "Media"); see mediaconfig.go.
	MediaStore            string        `yaml:"media_store"`              // local or s3
	MediaMaxSize          int64         `yaml:"media_max_size"`           // largest upload, bytes
	MediaMaxDimension     int           `yaml:"media_max_dimension"`      // longest side of a served image
	MediaColdAfter        time.Duration `yaml:"media_cold_after"`         // unread this long: cold tier
	MediaQuotaCount       int           `yaml:"media_quota_count"`        // uploads per user per day
	MediaQuotaBytes       int64         `yaml:"media_quota_bytes"`        // upload bytes per user per day
	MediaPublicEndpoint   string        `yaml:"media_public_endpoint"`    // the object store as clients reach it
	ClamdAddr             string        `yaml:"clamd_addr"`               // ClamAV clamd: tcp:HOST:PORT or unix:PATH
	MediaEventsSecretFile string        `yaml:"media_events_secret_file"` // S3 event notifications' shared secret
	MediaJobLease         time.Duration `yaml:"media_job_lease"`          // a worker's claim on a job; a dead worker's job waits this long
	S3Endpoint            string        `yaml:"s3_endpoint"`
	S3Region              string        `yaml:"s3_region"`
	S3AccessKey           string        `yaml:"s3_access_key"`
	S3SecretKey           string        `yaml:"s3_secret_key"`
	S3RawBucket           string        `yaml:"s3_raw_bucket"`
	S3ProcessedBucket     string        `yaml:"s3_processed_bucket"`
	S3ColdBucket          string        `yaml:"s3_cold_bucket"`
	S3ColdStorageClass    string        `yaml:"s3_cold_storage_class"`
	// Archive tiers (issue 11); see archiveconfig.go.
	ArchiveStore       string        `yaml:"archive_store"`         // local or s3; "" follows MediaStore
	S3ArchiveBucket    string        `yaml:"s3_archive_bucket"`     // with ArchiveStore s3
	ArchiveHotAge      time.Duration `yaml:"archive_hot_age"`       // older messages are sealed
	ArchiveLocalBudget int64         `yaml:"archive_local_budget"`  // hot history bytes beyond which the oldest are sealed
	ArchiveSealEvery   time.Duration `yaml:"archive_seal_every"`    // between sweeps
	ArchiveOrphanGrace time.Duration `yaml:"archive_orphan_grace"`  // unreferenced objects are deleted once this old
	ArchiveCacheBytes  int64         `yaml:"archive_cache_bytes"`   // decoded sealed blocks cached per node
	ArchiveSealPauseAt string        `yaml:"archive_seal_pause_at"` // crash tests only
	RetentionDays      int           `yaml:"retention_days"`        // messages older than this are deleted (0: never)
	// Scheduled backups (docs/operations.md "Backups"); see backupconfig.go.
	BackupEvery time.Duration `yaml:"backup_every"` // 0: none
	BackupTo    string        `yaml:"backup_to"`    // a directory or s3://bucket/prefix
	BackupKeep  int           `yaml:"backup_keep"`  // scheduled backups kept

	// Federated sign-in (docs/operations.md "Federated sign-in (OIDC)");
	// see oidcconfig.go.
	OIDCProviders        []idp.ProviderConfig `yaml:"oidc_providers"`
	OIDCName             string               `yaml:"oidc_name"`
	OIDCIssuer           string               `yaml:"oidc_issuer"`
	OIDCClientID         string               `yaml:"oidc_client_id"`
	OIDCClientSecretFile string               `yaml:"oidc_client_secret_file"`
	OIDCAudience         string               `yaml:"oidc_audience"`
	OIDCCAFile           string               `yaml:"oidc_ca_file"`
	OIDCAcceptOnConnect  bool                 `yaml:"oidc_accept_on_connect"`
	// PasswordLogin: built-in accounts may register and log in (default
	// true; false leaves only the OIDC providers).
	PasswordLogin bool `yaml:"password_login"`

	// Fields below are for tests and embedding; not settable from outside.
	FastPassword bool `yaml:"-"` // cheap argon2 parameters (tests only)
	// FastTimers lets durations under the minimums of durationRanges
	// through (any positive value): tests run a node's timers faster
	// than a server should (200 ms heartbeats, 1 s tokens, 3 s link
	// retention). The maxima still hold.
	FastTimers bool `yaml:"-"`
	// RetentionStraddlerLag is archive.RetentionPolicy.StraddlerLag (0:
	// the archive's; negative: a segment straddling the retention cutoff
	// is rewritten at once: tests of what retention deletes).
	RetentionStraddlerLag time.Duration `yaml:"-"`
	// RaftTuning, when set, adjusts the Raft member's configuration (tests
	// only: log bounds small enough that a follower left behind is sent a
	// snapshot).
	RaftTuning   func(*cluster.Config) `yaml:"-"`
	NoRateLimits bool                  `yaml:"-"` // HTTP rate limits off (tests that hammer one node from one IP)
	// LinkWindow and LinkMaxBatch set a region link's publishes in
	// flight and messages per cursor commit (bridge/region Config.Window,
	// MaxBatch); 0: its defaults (benchmarks compare them).
	LinkWindow, LinkMaxBatch int `yaml:"-"`
	// OriginsRefresh is how often the members' web origins are asked
	// (besides every membership change); 0: clusterapi's default (10 s).
	OriginsRefresh time.Duration `yaml:"-"`
	// FeatureLevelEvery is how often the leader asks the members which
	// feature level they support (besides every membership change); 0:
	// every 10 s.
	FeatureLevelEvery time.Duration `yaml:"-"`
	// ReportFeatureLevel, when set, is the feature level this node tells
	// the others it supports instead of featurelevel.Supported (tests: a
	// node of an earlier version reports 0).
	ReportFeatureLevel func() uint32 `yaml:"-"`
	// MediaSweepEvery is how often the media sweeper runs (tests: short);
	// 0: hourly.
	MediaSweepEvery time.Duration `yaml:"-"`
	// StartWaitLogEvery is how often a node waiting for its cluster at
	// start (no leader yet) says so in its log; 0: every 15 s (tests:
	// short).
	StartWaitLogEvery time.Duration `yaml:"-"`
	// IDClock, when set, is the clock of the node's message IDs (tests: a
	// clock set ahead, then a restart without it).
	IDClock func() time.Time `yaml:"-"`
	// PushTLS is the TLS client configuration of the push providers
	// (tests: RootCAs that trust the mock providers); nil: the system's.
	PushTLS *tls.Config `yaml:"-"`
	// PushPrivateEndpoints lets Web Push subscriptions name endpoints on
	// loopback and private addresses (tests: the mock push service on
	// 127.0.0.1); off, the node never posts into its own network for a
	// user (pushbridge.WebPushConfig.AllowPrivateEndpoints).
	PushPrivateEndpoints bool `yaml:"-"`
	// MisspelledEnv: EDGECHAT_* variables that spell a setting wrongly
	// (misspelledEnv), which serve ignores and warns of.
	MisspelledEnv []string `yaml:"-"`
	// LinkTLS is the TLS client configuration of tls:// region links
	// (tests: RootCAs that trust the other region); nil: the system's.
	LinkTLS *tls.Config `yaml:"-"`
	// CertReloadEvery is how often the TLS and link certificate files
	// are looked at for a renewal (tests); 0: certfile.DefaultEvery.
	CertReloadEvery time.Duration `yaml:"-"`
	// OIDCHTTPClient talks to the OIDC providers (tests); nil: a default
	// client (a provider's ca_file still applies).
	OIDCHTTPClient *http.Client `yaml:"-"`
}

// Defaults returns the configuration of `edgechat serve` with no flags.
func Defaults() Config {
	return Config{
		DataDir:           "./data",
		WebClient:         true,
		HTTPAddr:          ":8080",
		MQTTAddr:          ":1883",
		MQTTSAddr:         ":8883",
		NodeID:            "n1",
		ClusterAddr:       ":7946",
		Heartbeat:         10 * time.Second,
		PresenceGrace:     5 * time.Second,
		PresenceSeenEvery: time.Minute,
		AccessTTL:         15 * time.Minute,
		RaftTimeout:       cluster.DefaultHeartbeatTimeout,
		LogLevel:          "info",
		LogFormat:         "text",
		Region:            DefaultRegion,
		LinkRetention:     7 * 24 * time.Hour, // region.DefaultRetention
		LinkBacklogWarn:   10 * time.Minute,   // region.DefaultBacklogWarn

		MQTTPublishRate: "20/50",
		MQTTConnectRate: "10/30",
		// broker.DefaultSubscribeRate, broker.DefaultConnectionsPerUser
		MQTTSubscribeRate:      "20/500",
		MQTTConnectionsPerUser: 128,

		AccountDeleteGrace: DefaultAccountDeleteGrace,
		PasswordLogin:      true,
		OIDCName:           idp.DefaultName,

		APNsEndpoint:   APNsProduction,
		FCMEndpoint:    DefaultFCMEndpoint,
		PushGrace:      DefaultPushGrace,
		PushAckTimeout: DefaultPushAckTimeout,
		PushGroupLimit: DefaultPushGroupLimit,

		BackupKeep: DefaultBackupKeep,

		MediaStore:        MediaStoreLocal,
		MediaMaxSize:      DefaultMediaMaxSize,
		MediaMaxDimension: DefaultMediaMaxDim,
		MediaColdAfter:    DefaultMediaColdAfter,
		MediaQuotaCount:   DefaultMediaQuotaCount,
		MediaQuotaBytes:   DefaultMediaQuotaBytes,
		MediaJobLease:     DefaultMediaJobLease,
		S3RawBucket:       DefaultS3RawBucket,
		S3ProcessedBucket: DefaultS3ProcessedBucket,
		S3ColdBucket:      DefaultS3ColdBucket,

		S3ArchiveBucket:    DefaultS3ArchiveBucket,
		ArchiveHotAge:      archive.DefaultHotAge,
		ArchiveSealEvery:   archive.DefaultSealEvery,
		ArchiveOrphanGrace: archive.DefaultOrphanGrace,
		ArchiveCacheBytes:  DefaultArchiveCacheBytes,
	}
}

// ErrConfig marks configuration errors.
var ErrConfig = errors.New("invalid configuration")

type setting struct {
	name   string // flag name; env is EDGECHAT_ + upper snake case
	usage  string
	set    func(c *Config, v string) error
	isBool bool
	// repeat: the flag may be given several times; set gets the values
	// joined by commas (the env form of the same list).
	repeat bool
}

// listFlag collects the values of a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// setHTTPRate reads "CLASS=RATE/BURST[,CLASS=RATE/BURST...]" into
// c.HTTPRate, overriding the classes it names. Classes and rates are
// checked by Validate (they may come from the YAML file too).
func setHTTPRate(c *Config, v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		class, rate, ok := strings.Cut(item, "=")
		class, rate = strings.TrimSpace(class), strings.TrimSpace(rate)
		if !ok || class == "" || rate == "" {
			return fmt.Errorf("%q: want CLASS=RATE/BURST or CLASS=off (e.g. read=200/400)", item)
		}
		if c.HTTPRate == nil {
			c.HTTPRate = map[string]string{}
		}
		c.HTTPRate[class] = rate
	}
	return nil
}

func durationSetter(f func(c *Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("not a positive duration: %q", v)
		}
		*f(c) = d
		return nil
	}
}

// zeroDefaultSetter is durationSetter for a setting whose 0 means its
// default (or none, for --backup-every), as in the file: Validate checks
// the range of other values.
func zeroDefaultSetter(f func(c *Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("not a duration >= 0 (0: the default): %q", v)
		}
		*f(c) = d
		return nil
	}
}

func stringSetter(f func(c *Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *f(c) = v; return nil }
}

// listSetter parses a comma-separated list, ignoring empty items.
func listSetter(f func(c *Config) *[]string) func(*Config, string) error {
	return func(c *Config, v string) error {
		var out []string
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
		*f(c) = out
		return nil
	}
}

var settings = append([]setting{
	{name: "data", usage: "data directory", set: stringSetter(func(c *Config) *string { return &c.DataDir })},
	{name: "http-addr", usage: "HTTP API and MQTT over WebSocket (/mqtt) listen address", set: stringSetter(func(c *Config) *string { return &c.HTTPAddr })},
	{name: "mqtt-addr", usage: "MQTT over TCP listen address (empty disables)", set: stringSetter(func(c *Config) *string { return &c.MQTTAddr })},
	{name: "mqtts-addr", usage: "MQTT over TLS listen address (used when a certificate is configured)", set: stringSetter(func(c *Config) *string { return &c.MQTTSAddr })},
	{name: "tls-cert", usage: "TLS certificate file (PEM) for HTTPS/WSS and MQTTS", set: stringSetter(func(c *Config) *string { return &c.TLSCert })},
	{name: "tls-key", usage: "TLS private key file (PEM)", set: stringSetter(func(c *Config) *string { return &c.TLSKey })},
	{name: "node-id", usage: "stable name of this node in its cluster", set: stringSetter(func(c *Config) *string { return &c.NodeID })},
	{name: "cluster-addr", usage: "Raft and node-to-node listen address", set: stringSetter(func(c *Config) *string { return &c.ClusterAddr })},
	{name: "advertise-cluster", usage: "cluster address other nodes dial (default: the bound address)", set: stringSetter(func(c *Config) *string { return &c.AdvertiseCluster })},
	{name: "join", usage: "comma-separated cluster addresses of members to join; repeatable", repeat: true, set: listSetter(func(c *Config) *[]string { return &c.Join })},
	{name: "bootstrap-expect", usage: "form a new cluster once this many nodes (itself included) know each other", set: func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 9 {
			return fmt.Errorf("want 0..9, got %q", v)
		}
		c.BootstrapExpect = n
		return nil
	}},
	{name: "advertise-mqtt", usage: "public MQTT URL of this node (tcp:// or tls://), for /cluster/connect", set: stringSetter(func(c *Config) *string { return &c.AdvertiseMQTT })},
	{name: "advertise-ws", usage: "public MQTT-over-WebSocket URL of this node (ws:// or wss://)", set: stringSetter(func(c *Config) *string { return &c.AdvertiseWS })},
	{name: "dev", usage: "development mode: anonymous MQTT clients, non-chat topics open (never in production)", isBool: true, set: func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", v)
		}
		c.Dev = b
		return nil
	}},
	{name: "web-client", usage: "serve the browser chat app at / (false: API and MQTT only)", isBool: true, set: func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", v)
		}
		c.WebClient = b
		return nil
	}},
	{name: "allowed-origins", usage: "comma-separated Origins allowed for MQTT over WebSocket besides the same host (default: same host only); repeatable", repeat: true, set: listSetter(func(c *Config) *[]string { return &c.AllowedOrigins })},
	{name: "trusted-proxies", usage: "comma-separated CIDRs of load balancers whose X-Forwarded-For is believed; repeatable", repeat: true, set: listSetter(func(c *Config) *[]string { return &c.TrustedProxies })},
	{name: "heartbeat-interval", usage: "presence heartbeat interval", set: durationSetter(func(c *Config) *time.Duration { return &c.Heartbeat })},
	{name: "presence-grace", usage: "how long a user with no connection stays online before going offline", set: durationSetter(func(c *Config) *time.Duration { return &c.PresenceGrace })},
	{name: "presence-lastseen-every", usage: "how often the last seen of users online is written to the replicated state (a user going offline is written at once)", set: zeroDefaultSetter(func(c *Config) *time.Duration { return &c.PresenceSeenEvery })},
	{name: "access-token-ttl", usage: "lifetime of access tokens", set: durationSetter(func(c *Config) *time.Duration { return &c.AccessTTL })},
	{name: "account-delete-grace", usage: "how long a deleted account stays disabled before its data is erased (0 erases at once)", set: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("not a duration >= 0: %q", v)
		}
		c.AccountDeleteGrace = d
		return nil
	}},
	{name: "mqtt-publish-rate", usage: "MQTT publishes per user: RATE/BURST per second, or off", set: stringSetter(func(c *Config) *string { return &c.MQTTPublishRate })},
	{name: "mqtt-connect-rate", usage: "MQTT connection attempts per client IP: RATE/BURST per second, or off", set: stringSetter(func(c *Config) *string { return &c.MQTTConnectRate })},
	{name: "mqtt-subscribe-rate", usage: "MQTT subscriptions per user that make the node commit a route (the first local subscriber of a filter): RATE/BURST per second, or off", set: stringSetter(func(c *Config) *string { return &c.MQTTSubscribeRate })},
	{name: "mqtt-connections-per-user", usage: "live MQTT connections (distinct client IDs) one user may hold on a node; 0: no limit", set: intSetter(func(c *Config) *int { return &c.MQTTConnectionsPerUser })},
	{name: "http-rate", usage: "HTTP rate limit of a gateway class: CLASS=RATE/BURST per second or CLASS=off; repeatable (env: comma-separated). Classes: " + strings.Join(HTTPRateClasses(), ", "), repeat: true, set: setHTTPRate},
	{name: "raft-timeout", usage: "Raft heartbeat and election timeout: failover takes about twice this; longer means fewer heartbeats (idle CPU) and slower failover", set: zeroDefaultSetter(func(c *Config) *time.Duration { return &c.RaftTimeout })},
	{name: "node-down-after", usage: "how long a member may not answer the Raft leader before it counts as down (it stays a member): the presence of the users it homes moves to the members that are up until it answers again; 0: 3s, at least 4x --raft-timeout", set: zeroDefaultSetter(func(c *Config) *time.Duration { return &c.NodeDownAfter })},
	{name: "log-level", usage: "debug, info, warn or error", set: stringSetter(func(c *Config) *string { return &c.LogLevel })},
	{name: "log-format", usage: "text or json", set: stringSetter(func(c *Config) *string { return &c.LogFormat })},
}, slices.Concat(regionSettings, pushSettings, mediaSettings, archiveSettings, backupSettings, oidcSettings)...)

func envName(flagName string) string {
	return "EDGECHAT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// serveFlags is the flag set of `edgechat serve`: --config and one flag
// per setting.
func serveFlags() (fs *flag.FlagSet, configPath *string) {
	fs = flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	configPath = fs.String("config", "", "YAML configuration file")
	for _, s := range settings {
		if s.isBool {
			fs.Bool(s.name, false, s.usage)
			continue
		}
		if s.repeat {
			fs.Var(new(listFlag), s.name, s.usage)
			continue
		}
		fs.String(s.name, "", s.usage)
	}
	return fs, configPath
}

// FlagNames lists the flags of `edgechat serve` (without dashes) in
// alphabetical order, from the flag set LoadConfig parses. A test holds
// docs/operations.md to it.
func FlagNames() []string {
	fs, _ := serveFlags()
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// misspelledEnv names the EDGECHAT_* variables of env that are no
// setting but likely meant one, each with the setting it likely meant:
// serve warns of them. Likely meant: the same with other underscores or
// case (EDGECHAT_NODEID for EDGECHAT_NODE_ID), or a typo away (closest
// first): one or two letters missing, extra or wrong (one for short
// names), or the singular of a plural (EDGECHAT_TRUSTED_PROXY). Other
// EDGECHAT_* variables are left alone (the terminal client's, the
// tests').
func misspelledEnv(env map[string]string) []string {
	squash := func(s string) string {
		return strings.ToUpper(strings.ReplaceAll(strings.ReplaceAll(strings.TrimPrefix(s, "EDGECHAT_"), "_", ""), "-", ""))
	}
	singular := func(s string) string {
		if t, ok := strings.CutSuffix(s, "IES"); ok {
			return t + "Y"
		}
		return strings.TrimSuffix(s, "S")
	}
	names := []string{"EDGECHAT_CONFIG", "EDGECHAT_STOP_TIMEOUT"} // serve reads these too
	for _, s := range settings {
		names = append(names, envName(s.name))
	}
	var out []string
	for k := range env {
		if slices.Contains(names, k) || !strings.HasPrefix(k, "EDGECHAT_") {
			continue
		}
		sk := squash(k)
		best, bestDist := "", 3
		for _, name := range names {
			sn := squash(name)
			d := editDistance(sk, sn)
			if singular(sk) == singular(sn) {
				d = 0
			}
			limit := 2
			if min(len(sk), len(sn)) <= 4 {
				limit = 1
			}
			if d <= limit && d < bestDist {
				best, bestDist = name, d
			}
		}
		if best != "" {
			out = append(out, k+" (did you mean "+best+"?)")
		}
	}
	slices.Sort(out)
	return out
}

// editDistance is the Levenshtein distance of a and b (ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var unknownYAMLField = regexp.MustCompile(`field (\S+) not found in type node\.Config`)

// explainYAMLError names an unknown key of the configuration file as
// such ("field http-addr not found in type node.Config" spoke of a Go
// type) and, for a key written as its flag, gives the snake-case key.
func explainYAMLError(msg string) string {
	return unknownYAMLField.ReplaceAllStringFunc(msg, func(m string) string {
		k := unknownYAMLField.FindStringSubmatch(m)[1]
		out := fmt.Sprintf("unknown key %q", k)
		snake := strings.ReplaceAll(k, "-", "_")
		for _, s := range settings {
			if snake != k && strings.ReplaceAll(s.name, "-", "_") == snake {
				return out + " (keys are snake case: " + snake + ")"
			}
		}
		return out
	})
}

// LoadConfig builds the configuration for `edgechat serve` from args
// (without the subcommand), the environment (os.Environ format) and the
// file named by --config or EDGECHAT_CONFIG, and validates it (Validate,
// as node.New does).
func LoadConfig(args []string, environ []string) (Config, error) {
	cfg, err := LoadSettings(args, environ)
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// durationRanges are the ranges of the duration settings, where values
// out of them make no sense for a server (--heartbeat-interval 1ns: a
// ticker that never rests; --access-token-ttl 1ns: tokens dead on
// arrival; --link-retention 1ns: every message for another region
// dropped at once; --push-ack-timeout 1ns: every connected device pushed
// as if it had not acknowledged). Validate holds them, so both what an
// operator gives (LoadConfig) and a node built through node.New; with
// Config.FastTimers (tests) the minimums are not held, the maxima are.
// Negative values are always refused; 0 only where zero says what it
// means.
var durationRanges = []struct {
	flag     string // the setting, as its flag (without dashes)
	field    string // its Config field
	get      func(c *Config) time.Duration
	min, max time.Duration // max 0: none
	zero     string        // what 0 means, "" when it is refused (or min is 0)
}{
	{"heartbeat-interval", "Heartbeat", func(c *Config) time.Duration { return c.Heartbeat }, time.Second, time.Hour, ""},
	{"presence-grace", "PresenceGrace", func(c *Config) time.Duration { return c.PresenceGrace }, 100 * time.Millisecond, time.Hour, ""},
	{"presence-lastseen-every", "PresenceSeenEvery", func(c *Config) time.Duration { return c.PresenceSeenEvery }, time.Second, 24 * time.Hour, "the default"},
	{"access-token-ttl", "AccessTTL", func(c *Config) time.Duration { return c.AccessTTL }, time.Minute, 24 * time.Hour, ""},
	{"raft-timeout", "RaftTimeout", func(c *Config) time.Duration { return c.RaftTimeout }, 20 * time.Millisecond, time.Minute, "the default"},
	{"node-down-after", "NodeDownAfter", func(c *Config) time.Duration { return c.NodeDownAfter }, 100 * time.Millisecond, 10 * time.Minute, "the default"},
	{"push-grace", "PushGrace", func(c *Config) time.Duration { return c.PushGrace }, 0, maxPushGrace, ""},
	{"push-ack-timeout", "PushAckTimeout", func(c *Config) time.Duration { return c.PushAckTimeout }, minPushAckTimeout, maxPushAckTimeout, "off"},
	{"link-retention", "LinkRetention", func(c *Config) time.Duration { return c.LinkRetention }, time.Minute, 0, ""},
	{"link-backlog-warn", "LinkBacklogWarn", func(c *Config) time.Duration { return c.LinkBacklogWarn }, time.Second, 0, ""},
	// An erasure the user asked for waits at most 90 days; under a
	// minute is no grace (0 is "at once").
	{"account-delete-grace", "AccountDeleteGrace", func(c *Config) time.Duration { return c.AccountDeleteGrace }, time.Minute, 90 * 24 * time.Hour, "erase at once"},
	// Message IDs carry milliseconds: a finer hot age means nothing (a
	// small one seals all but each conversation's newest message at the
	// next sweep: the seal tests run 1ms). Over ten years is a typo.
	{"archive-hot-age", "ArchiveHotAge", func(c *Config) time.Duration { return c.ArchiveHotAge }, time.Millisecond, 10 * 365 * 24 * time.Hour, "the default"},
}

// validateDurations holds the settings of durationRanges to their
// ranges; errors name the flag and the Config field and wrap ErrConfig.
func (c Config) validateDurations() error {
	for _, d := range durationRanges {
		v := d.get(&c)
		if v == 0 && d.zero != "" {
			continue
		}
		low := d.min
		if c.FastTimers {
			low = min(low, 1) // tests: any positive value
		}
		if v < low || v == 0 && d.min > 0 || d.max > 0 && v > d.max {
			want := fmt.Sprintf("at least %v", d.min)
			if d.max > 0 {
				want = fmt.Sprintf("%v to %v", d.min, d.max)
			}
			if d.zero != "" {
				want += fmt.Sprintf(" (or 0: %s)", d.zero)
			}
			return fmt.Errorf("%w: --%s %v: want %s (Config.%s)", ErrConfig, d.flag, v, want, d.field)
		}
	}
	return nil
}

// LoadSettings is LoadConfig without the validation of the whole: each
// value is read and parsed, but a configuration that serve would refuse
// (a cluster size without --join, say) is returned as it is. For tools
// that need a few settings of the node an environment configures (the
// health check: its HTTP address and certificate).
func LoadSettings(args []string, environ []string) (Config, error) {
	cfg := Defaults()
	fs, configPath := serveFlags()
	if err := fs.Parse(args); err != nil {
		return cfg, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%w: unexpected arguments %q", ErrConfig, fs.Args())
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "EDGECHAT_") {
			env[k] = v
		}
	}
	path := *configPath
	if path == "" {
		path = env["EDGECHAT_CONFIG"]
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("%w: %s: %s", ErrConfig, path, explainYAMLError(err.Error()))
		}
	}
	for _, s := range settings {
		if v, ok := env[envName(s.name)]; ok {
			if err := s.set(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%w: %s: %v", ErrConfig, envName(s.name), err)
			}
		}
	}
	cfg.MisspelledEnv = misspelledEnv(env)
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		for _, s := range settings {
			if s.name == f.Name && ferr == nil {
				if err := s.set(&cfg, f.Value.String()); err != nil {
					ferr = fmt.Errorf("%w: --%s: %v", ErrConfig, f.Name, err)
				}
			}
		}
	})
	// INFO, JSON: as other programs take them.
	cfg.LogLevel, cfg.LogFormat = strings.ToLower(cfg.LogLevel), strings.ToLower(cfg.LogFormat)
	return cfg, ferr
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("%w: data directory is required", ErrConfig)
	}
	if c.HTTPAddr == "" {
		return fmt.Errorf("%w: http address is required", ErrConfig)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("%w: --tls-cert and --tls-key go together", ErrConfig)
	}
	if c.NodeID == "" || strings.ContainsAny(c.NodeID, "/ \t") {
		return fmt.Errorf("%w: node id %q", ErrConfig, c.NodeID)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("%w: log level %q: want debug, info, warn or error", ErrConfig, c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("%w: log format %q: want text or json", ErrConfig, c.LogFormat)
	}
	if c.BootstrapExpect > 0 && len(c.Join) == 0 {
		return fmt.Errorf("%w: --bootstrap-expect needs --join with the other founding nodes", ErrConfig)
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 9 {
		return fmt.Errorf("%w: --bootstrap-expect must be 0..9", ErrConfig)
	}
	if err := checkAdvertised("--advertise-mqtt", c.AdvertiseMQTT, "tcp://HOST:PORT or tls://HOST:PORT",
		"tcp", "mqtt", "tls", "ssl", "mqtts"); err != nil {
		return err
	}
	if err := checkAdvertised("--advertise-ws", c.AdvertiseWS, "ws://HOST[:PORT]/mqtt or wss://HOST[:PORT]/mqtt",
		"ws", "wss"); err != nil {
		return err
	}
	for _, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			return fmt.Errorf("%w: trusted proxy %q is not a CIDR", ErrConfig, p)
		}
	}
	if c.MQTTConnectionsPerUser < 0 {
		return fmt.Errorf("%w: --mqtt-connections-per-user %d: want 0 (no limit) or more", ErrConfig, c.MQTTConnectionsPerUser)
	}
	for _, r := range []struct{ flag, value string }{
		{"mqtt-publish-rate", c.MQTTPublishRate}, {"mqtt-connect-rate", c.MQTTConnectRate}, {"mqtt-subscribe-rate", c.MQTTSubscribeRate},
	} {
		if _, err := ParseRate(r.value); err != nil {
			return fmt.Errorf("%w: --%s %q: want RATE/BURST (e.g. 20/50) or off", ErrConfig, r.flag, r.value)
		}
	}
	if _, _, err := c.HTTPRateLimits(); err != nil {
		return err
	}
	if err := c.validateDurations(); err != nil {
		return err
	}
	if rt := cmp.Or(c.RaftTimeout, cluster.DefaultHeartbeatTimeout); c.NodeDownAfter != 0 && c.NodeDownAfter < 4*rt {
		// A follower that hears no leader this long counts itself down:
		// shorter than an ordinary election, every election would move
		// presence homes away and back.
		return fmt.Errorf("%w: --node-down-after %v: want at least 4x --raft-timeout (%v), or 0 for the default", ErrConfig, c.NodeDownAfter, 4*rt)
	}
	if err := c.validateRegion(); err != nil {
		return err
	}
	if err := c.validatePush(); err != nil {
		return err
	}
	if err := c.validateOIDC(); err != nil {
		return err
	}
	if err := c.validateBackup(); err != nil {
		return err
	}
	if err := c.validateMedia(); err != nil {
		return err
	}
	return c.validateArchive()
}

// checkAdvertised checks a public URL that /cluster/connect hands to
// clients ("" is not set): one of schemes, with a host.
func checkAdvertised(flag, v, want string, schemes ...string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" || u.User != nil {
		return fmt.Errorf("%w: %s %q: want %s", ErrConfig, flag, v, want)
	}
	return nil
}

// Usage describes the flags of `edgechat serve`.
func Usage() string {
	var b strings.Builder
	b.WriteString("  --config FILE\n\tYAML configuration file (env EDGECHAT_CONFIG)\n")
	d := Defaults()
	defaults := map[string]string{"data": d.DataDir, "http-addr": d.HTTPAddr, "mqtt-addr": d.MQTTAddr, "mqtts-addr": d.MQTTSAddr,
		"node-id": d.NodeID, "cluster-addr": d.ClusterAddr, "heartbeat-interval": d.Heartbeat.String(),
		"presence-grace": d.PresenceGrace.String(), "presence-lastseen-every": d.PresenceSeenEvery.String(), "mqtt-publish-rate": d.MQTTPublishRate, "mqtt-connect-rate": d.MQTTConnectRate, "mqtt-subscribe-rate": d.MQTTSubscribeRate, "mqtt-connections-per-user": strconv.Itoa(d.MQTTConnectionsPerUser), "access-token-ttl": d.AccessTTL.String(), "account-delete-grace": d.AccountDeleteGrace.String(), "raft-timeout": d.RaftTimeout.String(), "node-down-after": "3s", "log-level": d.LogLevel, "log-format": d.LogFormat,
		"http-rate": defaultHTTPRates(), "apns-endpoint": d.APNsEndpoint, "fcm-endpoint": d.FCMEndpoint,
		"push-grace": d.PushGrace.String(), "push-group-limit": strconv.Itoa(d.PushGroupLimit), "push-ack-timeout": d.PushAckTimeout.String(),
		"media-store": d.MediaStore, "media-max-size": strconv.FormatInt(d.MediaMaxSize, 10),
		"media-max-dimension": strconv.Itoa(d.MediaMaxDimension), "media-cold-after": d.MediaColdAfter.String(),
		"media-quota-count": strconv.Itoa(d.MediaQuotaCount), "media-quota-bytes": strconv.FormatInt(d.MediaQuotaBytes, 10),
		"media-job-lease": d.MediaJobLease.String(), "s3-raw-bucket": d.S3RawBucket,
		"s3-processed-bucket": d.S3ProcessedBucket, "s3-cold-bucket": d.S3ColdBucket,
		"roles": strings.Join(Roles, ","), "s3-archive-bucket": d.S3ArchiveBucket, "archive-hot-age": d.ArchiveHotAge.String(),
		"archive-seal-every": d.ArchiveSealEvery.String(), "archive-orphan-grace": d.ArchiveOrphanGrace.String(),
		"archive-cache-bytes": strconv.FormatInt(d.ArchiveCacheBytes, 10), "backup-keep": strconv.Itoa(d.BackupKeep),
		"oidc-name": d.OIDCName, "password-login": strconv.FormatBool(d.PasswordLogin),
		"web-client": strconv.FormatBool(d.WebClient), "region": d.Region, "link-retention": d.LinkRetention.String(),
		"link-backlog-warn": d.LinkBacklogWarn.String()}
	for _, s := range settings {
		fmt.Fprintf(&b, "  --%s\n\t%s (env %s", s.name, s.usage, envName(s.name))
		if v := defaults[s.name]; v != "" {
			fmt.Fprintf(&b, ", default %q", v)
		}
		b.WriteString(")\n")
	}
	return b.String()
}

// ParseRate reads a rate limit "RATE/BURST" (per second) or "off".
func ParseRate(s string) (ratelimit.Spec, error) {
	if s == "off" || s == "unlimited" {
		return ratelimit.Unlimited, nil
	}
	r, b, ok := strings.Cut(s, "/")
	rate, err1 := strconv.ParseFloat(r, 64)
	burst, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || rate <= 0 || burst < 1 {
		return ratelimit.Spec{}, fmt.Errorf("rate %q: want RATE/BURST (e.g. 20/50) or off", s)
	}
	return ratelimit.Spec{Rate: rate, Burst: burst}, nil
}

// HTTPRateClasses are the class names --http-rate accepts, sorted: the
// gateway's route classes and gateway.ClassAll.
func HTTPRateClasses() []string {
	classes := []string{gateway.ClassAll}
	for class := range gateway.DefaultRateLimits() {
		classes = append(classes, class)
	}
	slices.Sort(classes)
	return classes
}

// HTTPRateLimits reads HTTPRate into the gateway's settings: the per-IP
// bucket of every request (class "all"; zero when not set) and the
// per-class buckets that are set (the gateway takes its defaults for the
// others). Errors name the class and wrap ErrConfig.
func (c Config) HTTPRateLimits() (perIP ratelimit.Spec, classes map[string]ratelimit.Spec, err error) {
	known := HTTPRateClasses()
	classes = map[string]ratelimit.Spec{}
	for class, v := range c.HTTPRate {
		if !slices.Contains(known, class) {
			return perIP, nil, fmt.Errorf("%w: http rate: unknown class %q (classes: %s)", ErrConfig, class, strings.Join(known, ", "))
		}
		spec, err := ParseRate(v)
		if err != nil {
			return perIP, nil, fmt.Errorf("%w: http rate %s: %w", ErrConfig, class, err)
		}
		if class == gateway.ClassAll {
			perIP = spec
			continue
		}
		classes[class] = spec
	}
	return perIP, classes, nil
}

// defaultHTTPRates is the gateway's defaults in --http-rate syntax.
func defaultHTTPRates() string {
	var out []string
	specs := gateway.DefaultRateLimits()
	specs[gateway.ClassAll] = gateway.RateSpec{Rate: gateway.DefaultPerIPRate, Burst: gateway.DefaultPerIPBurst}
	for _, class := range HTTPRateClasses() {
		out = append(out, class+"="+FormatRate(specs[class]))
	}
	return strings.Join(out, ",")
}

// FormatRate is the inverse of ParseRate: "RATE/BURST" or "off".
func FormatRate(s ratelimit.Spec) string {
	if s.IsUnlimited() {
		return "off"
	}
	return strconv.FormatFloat(s.Rate, 'g', -1, 64) + "/" + strconv.Itoa(s.Burst)
}
