package node

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/ratelimit"
)

func TestConfigPrecedenceFlagsEnvFileDefaults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edgechat.yaml")
	yaml := "data: /from/file\nhttp_addr: 127.0.0.1:1\nmqtt_addr: 127.0.0.1:2\nheartbeat_interval: 7s\nallowed_origins: [https://a.example]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"EDGECHAT_HTTP_ADDR=127.0.0.1:3", "EDGECHAT_MQTT_ADDR=127.0.0.1:4", "PATH=/bin"}
	cfg, err := LoadConfig([]string{"--config", file, "--mqtt-addr", "127.0.0.1:5", "--dev"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/file" || cfg.HTTPAddr != "127.0.0.1:3" || cfg.MQTTAddr != "127.0.0.1:5" {
		t.Fatalf("precedence wrong: %+v", cfg)
	}
	if cfg.Heartbeat != 7*time.Second || !cfg.Dev || len(cfg.AllowedOrigins) != 1 {
		t.Fatalf("values: %+v", cfg)
	}
	if cfg.ClusterAddr != ":7946" || cfg.PresenceGrace != 5*time.Second {
		t.Fatalf("defaults lost: %+v", cfg)
	}
}

func TestConfigRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("no_such_key: 1\n"), 0o600)
	cases := map[string]struct {
		args []string
		env  []string
	}{
		"unknown flag":                               {args: []string{"--nope"}},
		"bad duration":                               {args: []string{"--heartbeat-interval", "soon"}},
		"negative duration":                          {env: []string{"EDGECHAT_PRESENCE_GRACE=-1s"}},
		"unknown yaml key":                           {args: []string{"--config", bad}},
		"missing file":                               {args: []string{"--config", filepath.Join(dir, "missing.yaml")}},
		"cert without key":                           {args: []string{"--tls-cert", "c.pem"}},
		"bad log level":                              {args: []string{"--log-level", "loud"}},
		"stray argument":                             {args: []string{"extra"}},
		"node id with slash":                         {args: []string{"--node-id", "a/b"}},
		"bad bool in env var":                        {env: []string{"EDGECHAT_DEV=maybe"}},
		"raft timeout too short":                     {args: []string{"--raft-timeout", "5ms"}},
		"raft timeout too long":                      {env: []string{"EDGECHAT_RAFT_TIMEOUT=2h"}},
		"node down before an election ends":          {args: []string{"--raft-timeout", "1s", "--node-down-after", "2s"}},
		"node down before the default election ends": {args: []string{"--node-down-after", "1500ms"}},
		"negative connections per user":              {args: []string{"--mqtt-connections-per-user", "-1"}},
		"bad subscribe rate":                         {env: []string{"EDGECHAT_MQTT_SUBSCRIBE_RATE=fast"}},
	}
	for name, c := range cases {
		if _, err := LoadConfig(c.args, c.env); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", name, err)
		}
	}
}

func TestRaftTimeoutIsSettable(t *testing.T) {
	c, err := LoadConfig([]string{"--raft-timeout", "2s"}, nil)
	if err != nil || c.RaftTimeout != 2*time.Second {
		t.Fatalf("--raft-timeout 2s: %v, %v", c.RaftTimeout, err)
	}
	c, err = LoadConfig(nil, []string{"EDGECHAT_RAFT_TIMEOUT=1s"})
	if err != nil || c.RaftTimeout != time.Second {
		t.Fatalf("EDGECHAT_RAFT_TIMEOUT=1s: %v, %v", c.RaftTimeout, err)
	}
}

func TestDefaultsAreTheProductDefaults(t *testing.T) {
	cfg, err := LoadConfig(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "./data" || cfg.HTTPAddr != ":8080" || cfg.MQTTAddr != ":1883" || cfg.ClusterAddr != ":7946" || cfg.Dev {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestNewFailsCleanlyWhenAPortIsTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = l.Addr().String() // taken
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.ClusterAddr = "127.0.0.1:0"
	if _, err := New(cfg, nil); err == nil {
		t.Fatal("New succeeded on a taken port")
	}
	// Everything New opened was released: the data dir can be opened again.
	cfg.HTTPAddr = "127.0.0.1:0"
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("second New on the same data dir: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = n.Run(ctx)
}

func TestHTTPRateParsingAndPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edgechat.yaml")
	// off unquoted: YAML must keep it the string "off", not a boolean.
	yaml := "http_rate:\n  read: 1/1\n  write: 2/2\n  upload: off\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"EDGECHAT_HTTP_RATE=read=3/3, admin=7/8"}
	cfg, err := LoadConfig([]string{"--config", file,
		"--http-rate", "write=off", "--http-rate", "auth=4/4,all=100/200", "--http-rate", "admin=9.5/10"}, env)
	if err != nil {
		t.Fatal(err)
	}
	perIP, classes, err := cfg.HTTPRateLimits()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ratelimit.Spec{
		"read":   {Rate: 3, Burst: 3},    // env over file
		"write":  ratelimit.Unlimited,    // flag over file
		"upload": ratelimit.Unlimited,    // file
		"auth":   {Rate: 4, Burst: 4},    // flag
		"admin":  {Rate: 9.5, Burst: 10}, // flag over env
	}
	if len(classes) != len(want) {
		t.Fatalf("classes %v, want %v", classes, want)
	}
	for class, w := range want {
		if classes[class] != w {
			t.Errorf("%s: %v, want %v", class, classes[class], w)
		}
	}
	if perIP != (ratelimit.Spec{Rate: 100, Burst: 200}) {
		t.Errorf("per IP (all): %v", perIP)
	}

	// Nothing set: the gateway keeps its defaults (zero per-IP spec, no classes).
	cfg, err = LoadConfig(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if perIP, classes, err := cfg.HTTPRateLimits(); err != nil || !perIP.IsZero() || len(classes) != 0 {
		t.Fatalf("defaults: %v %v %v", perIP, classes, err)
	}
	if u := Usage(); !strings.Contains(u, "--http-rate") || !strings.Contains(u, "read=20/40") || !strings.Contains(u, "probe=off") {
		t.Fatalf("usage does not list --http-rate with its defaults:\n%s", u)
	}
}

func TestHTTPRateRefusesBadInputClearly(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(badYAML, []byte("http_rate:\n  reads: 1/1\n"), 0o600)
	for name, c := range map[string]struct {
		args []string
		env  []string
		msg  string
	}{
		"unknown class":         {args: []string{"--http-rate", "reads=1/1"}, msg: `unknown class "reads" (classes: admin, all, auth, probe, read, upload, write)`},
		"unknown class in env":  {env: []string{"EDGECHAT_HTTP_RATE=chat=1/1"}, msg: `unknown class "chat"`},
		"unknown class in file": {args: []string{"--config", badYAML}, msg: `unknown class "reads"`},
		"no equals":             {args: []string{"--http-rate", "read"}, msg: "want CLASS=RATE/BURST"},
		"no class":              {args: []string{"--http-rate", "=1/1"}, msg: "want CLASS=RATE/BURST"},
		"no burst":              {args: []string{"--http-rate", "read=5"}, msg: `http rate read: rate "5": want RATE/BURST`},
		"zero rate":             {args: []string{"--http-rate", "read=0/5"}, msg: "http rate read"},
		"zero burst":            {args: []string{"--http-rate", "write=5/0"}, msg: "http rate write"},
		"negative rate":         {args: []string{"--http-rate", "auth=-1/5"}, msg: "http rate auth"},
		"not a number":          {env: []string{"EDGECHAT_HTTP_RATE=read=fast/5"}, msg: "http rate read"},
	} {
		_, err := LoadConfig(c.args, c.env)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err %v, want ErrConfig saying %q", name, err, c.msg)
		}
	}
}

// A misspelled EDGECHAT_* variable (EDGECHAT_NODEID for EDGECHAT_NODE_ID)
// was ignored without a word, where a misspelled key of the YAML file is
// refused: the node started as n1. It is still ignored (the environment
// also holds other tools' EDGECHAT_* variables), but named with the
// setting it likely meant, which serve logs as a warning; variables that
// resemble no setting are not.
func TestMisspelledEnvironmentVariablesAreNamed(t *testing.T) {
	c, err := LoadConfig(nil, []string{"EDGECHAT_NODEID=n7", "EDGECHAT_HTTP_ADDR=127.0.0.1:0", "EDGECHAT_Raft_Timeout=2s",
		"EDGECHAT_SERVER=http://x", "EDGECHAT_MINIO=/bin/minio", "HOME=/root"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"EDGECHAT_NODEID (did you mean EDGECHAT_NODE_ID?)", "EDGECHAT_Raft_Timeout (did you mean EDGECHAT_RAFT_TIMEOUT?)"}
	if !slices.Equal(c.MisspelledEnv, want) {
		t.Fatalf("misspelled: %q, want %q", c.MisspelledEnv, want)
	}
	if c.NodeID == "n7" || c.HTTPAddr != "127.0.0.1:0" {
		t.Fatalf("the settings read: node %q, http %q", c.NodeID, c.HTTPAddr)
	}
}

// A YAML key written as its flag (http-addr) or misspelled is named as
// an unknown key, with the snake-case key when that is one: it answered
// "field http-addr not found in type node.Config", a Go type the reader
// of docs/operations.md never met.
func TestYAMLKeyErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ yaml, want, not string }{
		{"http-addr: 127.0.0.1:0\n", `unknown key "http-addr" (keys are snake case: http_addr)`, "node.Config"},
		{"mqtt_adr: 127.0.0.1:0\n", `unknown key "mqtt_adr"`, "node.Config"},
	} {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig([]string{"--config", p}, nil)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), c.not) {
			t.Errorf("%q: %v; want ErrConfig saying %s", c.yaml, err, c.want)
		}
	}
}

// A misspelled EDGECHAT_* variable that is not only a matter of
// underscores or case (a letter missing, doubled or wrong, a plural) was
// ignored without a word: EDGECHAT_ALLOWED_ORIGIN (for ..._ORIGINS) left
// browsers refused, EDGECHAT_TRUSTED_PROXY rate-limited every client by
// the load balancer's address, EDGECHAT_RETENTION_DAY kept messages for
// ever, EDGECHAT_S3_SECRET_KY fell back to other credentials. Each is now
// named with the setting it likely meant (a name one or two edits away);
// the other tools' variables are not.
func TestTyposOfEnvironmentVariablesAreNamed(t *testing.T) {
	typos := map[string]string{
		"EDGECHAT_LOG_LEVL":        "EDGECHAT_LOG_LEVEL",
		"EDGECHAT_ALLOWED_ORIGIN":  "EDGECHAT_ALLOWED_ORIGINS",
		"EDGECHAT_TRUSTED_PROXY":   "EDGECHAT_TRUSTED_PROXIES",
		"EDGECHAT_RETENTION_DAY":   "EDGECHAT_RETENTION_DAYS",
		"EDGECHAT_S3_SECRET_KY":    "EDGECHAT_S3_SECRET_KEY",
		"EDGECHAT_BOOTSTRAP_EXPEC": "EDGECHAT_BOOTSTRAP_EXPECT",
		"EDGECHAT_HTTP_ADR":        "EDGECHAT_HTTP_ADDR",
		"EDGECHAT_DAT":             "EDGECHAT_DATA",
		"EDGECHAT_STOP_TIMOUT":     "EDGECHAT_STOP_TIMEOUT",
		"EDGECHAT_CONFG":           "EDGECHAT_CONFIG",
	}
	// Variables of the other tools, the compose file, the tests and the
	// benchmarks: no warning.
	others := []string{"EDGECHAT_SERVER", "EDGECHAT_TOKEN", "EDGECHAT_USER", "EDGECHAT_DEVICE", "EDGECHAT_PUBLIC_HOST",
		"EDGECHAT_HEALTH_URL", "EDGECHAT_TEST_LOG", "EDGECHAT_STOP_TIMEOUT", "EDGECHAT_MINIO", "EDGECHAT_MC", "EDGECHAT_BIN",
		"EDGECHAT_R", "EDGECHAT_LINGER", "EDGECHAT_INFLIGHT", "EDGECHAT_CHAOS", "EDGECHAT_CHAOS_DURATION", "EDGECHAT_PPROF",
		"EDGECHAT_FIGURES", "EDGECHAT_DOWNLOADS", "EDGECHAT_CHROMIUM", "EDGECHAT_SCREENSHOTS", "EDGECHAT_BENCH_DIR",
		"EDGECHAT_BENCH_CACHE", "EDGECHAT_BENCH_LAYOUT", "EDGECHAT_BENCH_STORED", "EDGECHAT_MEMTABLE_MB",
		"EDGECHAT_WRITE_OLDFORMAT", "EDGECHAT_DISK_BENCH_DIR", "EDGECHAT_BACKUP_BENCH_MSGS", "EDGECHAT_FSM_BARRIER_CHILD_DIR"}
	var env, want []string
	for typo, meant := range typos {
		env = append(env, typo+"=x")
		want = append(want, typo+" (did you mean "+meant+"?)")
	}
	for _, o := range others {
		env = append(env, o+"=x")
	}
	slices.Sort(want)
	c, err := LoadSettings(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.MisspelledEnv, want) {
		t.Fatalf("named:\n%q\nwant:\n%q", c.MisspelledEnv, want)
	}
}

// Settings whose 0 means "the default" (or "none", for --backup-every)
// take 0 from a flag or the environment as from the file: the flags
// refused it ("not a positive duration: \"0\""), although --help says of
// --node-down-after "0: 3s" and operations.md of --archive-hot-age "0 is
// the default", and although the file took it; so a value the file set
// could not be set back to the default (or backups turned off) from the
// environment.
func TestZeroMeansTheDefaultInEverySource(t *testing.T) {
	for _, name := range []string{"raft-timeout", "node-down-after", "presence-lastseen-every", "media-job-lease",
		"archive-hot-age", "archive-seal-every", "archive-orphan-grace", "backup-every"} {
		key := strings.ReplaceAll(name, "-", "_")
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(key+": 0s\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fromFile, err := LoadConfig([]string{"--config", p}, nil)
		if err != nil {
			t.Errorf("%s: 0s in the file: %v", key, err)
			continue
		}
		for _, v := range []string{"0", "0s"} {
			fromFlag, err := LoadConfig([]string{"--" + name + "=" + v}, nil)
			if err != nil {
				t.Errorf("--%s=%s: %v; the file takes it", name, v, err)
			} else if !reflect.DeepEqual(fromFlag, fromFile) {
				t.Errorf("--%s=%s: not the configuration of %s: 0s in the file", name, v, key)
			}
			fromEnv, err := LoadConfig(nil, []string{envName(name) + "=" + v})
			if err != nil {
				t.Errorf("%s=%s: %v; the file takes it", envName(name), v, err)
			} else if !reflect.DeepEqual(fromEnv, fromFile) {
				t.Errorf("%s=%s: not the configuration of %s: 0s in the file", envName(name), v, key)
			}
		}
		if _, err := LoadConfig([]string{"--" + name + "=-1s"}, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("--%s=-1s: %v, want refused", name, err)
		}
	}
}

// A log level or format written in capitals (LOG_LEVEL=INFO, as many
// other programs take it) is taken, and a wrong one is refused with the
// values that are right: "log level \"INFO\"" said neither.
func TestLogLevelAndFormatIgnoreCase(t *testing.T) {
	c, err := LoadConfig([]string{"--log-level=WARN", "--log-format=JSON"}, nil)
	if err != nil {
		t.Fatalf("--log-level=WARN --log-format=JSON: %v", err)
	}
	if c.LogLevel != "warn" || c.LogFormat != "json" {
		t.Fatalf("log level %q, format %q; want warn, json", c.LogLevel, c.LogFormat)
	}
	for _, args := range [][]string{{"--log-level=warning"}, {"--log-format=logfmt"}} {
		_, err := LoadConfig(args, nil)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "want ") {
			t.Errorf("%v: %v; want ErrConfig naming the values taken", args, err)
		}
	}
}

// A malformed MQTT rate names its setting, as --http-rate's name their
// class and the other settings their flag: `serve --mqtt-subscribe-rate
// 5` answered `rate "5": want RATE/BURST`, which of the three MQTT rates
// (and in which of flag, environment and file) left to guess (by hand,
// session 37 handtry).
func TestMQTTRateErrorsNameTheSetting(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("mqtt_connect_rate: 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args, env []string
		want      string
	}{
		{args: []string{"--mqtt-subscribe-rate", "5"}, want: `--mqtt-subscribe-rate "5": want RATE/BURST`},
		{args: []string{"--mqtt-publish-rate", "20/0"}, want: `--mqtt-publish-rate "20/0": want RATE/BURST`},
		{env: []string{"EDGECHAT_MQTT_SUBSCRIBE_RATE=fast"}, want: `--mqtt-subscribe-rate "fast"`},
		{args: []string{"--config", file}, want: `--mqtt-connect-rate "10"`},
	} {
		_, err := LoadConfig(c.args, c.env)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: err %v, want ErrConfig saying %q", c.args, c.env, err, c.want)
		}
	}
}
