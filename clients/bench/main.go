// Command bench is edgechat's load and measurement tool. It runs against
// a live node and measures what the product promises:
//
//	bench conns       server RSS per idle authenticated MQTT connection
//	bench latency     publish→PUBACK (and →delivery) latency of durable
//	                  direct messages at a fixed, open-loop rate
//	bench throughput  durable messages committed per second, closed loop
//	bench idle        RSS per idle connection, on any broker
//	bench dm, rooms   plain-MQTT 1:1 and fan-out scenarios, on any broker
//	bench durable     real edgechat DMs, one node or a cluster
//	bench history     history pages and sync from a pre-filled store
//	bench group       big-group fan-out: send → the last online member's delivery
//	bench report      the side-by-side report of `make bench-compare`
//
// dm, rooms and durable run at a fixed open-loop rate or sweep rates for
// the highest one whose p99 stays under a bar.
//
// Every mode prints progress lines on stderr while it runs, a summary
// table on stdout at the end, and optionally JSON (--out) and an SVG
// chart (--chart). See docs/benchmarks.md for the figures and commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "bench: %v\n\n%s", err, usage)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

const usage = `bench — load and measurement tool for edgechat

Usage:
  bench conns      [flags]   N idle MQTT connections; server RSS per connection
  bench latency    [flags]   publish→PUBACK latency at a fixed rate
  bench throughput [flags]   committed durable messages per second
  bench idle       [flags]   N idle connections, server RSS per connection (any broker with --anon)
  bench dm         [flags]   1:1 messages between pairs of connections, QoS 0 or 1, plain MQTT topics (any broker)
  bench rooms      [flags]   K subscribers per topic, M topics, a fixed total publish rate (any broker)
  bench durable    [flags]   real edgechat DMs (accounts, envelopes, QoS 1), one node or a cluster (--mqtt a,b,c)
  bench history    [flags]   fill the store with N messages, then time history pages, deep paging and sync
  bench seed       [flags]   create the group scenario's accounts in a data dir before serving it (cheap hashes)
  bench group      [flags]   a group of N members (10,000), M online (1,000): send → last member's delivery per message
  bench refserver  [--listen ADDR]   a plain mochi-mqtt broker to compare with (use --anon)
  bench freeport   [-n N]    print N free TCP ports on 127.0.0.1 (for scripts)
  bench fsync      [flags]   the disk's append+fdatasync latency (what bounds a durable PUBACK)
  bench report     [flags]   write docs/perf/README.md from a bench-compare results directory

dm, rooms and durable run at --rate or sweep --sweep 1000,2000,5000 (or
START/FACTOR/MAX) for the highest rate whose p99 stays under --p99-max.

Run "bench MODE -h" for the flags of a mode.
`

// common are the flags every mode has.
type common struct {
	httpURL, mqtt, data, out, chart, prefix, password string
	pid                                               int   // the first of pids
	pids                                              []int // --pid PID[,PID...]: a cluster's processes are summed
	anon                                              bool
	ttl, progressEvery                                time.Duration
	cpuProfile                                        string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.httpURL, "http", "http://127.0.0.1:8080", "HTTP API base URL of the node (accounts)")
	fs.StringVar(&c.mqtt, "mqtt", "127.0.0.1:1883", "MQTT address host:port, tcp://host:port or ws://host:port/mqtt; dm, rooms and durable take a comma-separated list (a cluster) and spread connections over it")
	fs.StringVar(&c.data, "data", "", "the node's data directory: mint tokens from its keys instead of logging in")
	fs.Func("pid", "PID of the server process (several, comma-separated, for a cluster: summed), to read its RSS and CPU time from /proc", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				return fmt.Errorf("--pid: %q is not a process ID", f)
			}
			c.pids = append(c.pids, n)
		}
		c.pid = c.pids[0]
		return nil
	})
	fs.StringVar(&c.out, "out", "", "write machine-readable results to this JSON file")
	fs.StringVar(&c.chart, "chart", "", "draw a chart to this SVG file")
	fs.StringVar(&c.prefix, "prefix", "bench", "prefix of the bench users' names")
	fs.StringVar(&c.password, "password", "bench-password", "password of the bench users (created when missing)")
	fs.DurationVar(&c.ttl, "ttl", 2*time.Hour, "lifetime of minted tokens")
	fs.BoolVar(&c.anon, "anon", false, "no accounts or tokens: connect with a user name only (edgechat --dev, or another broker for comparison)")
	fs.DurationVar(&c.progressEvery, "progress", time.Second, "interval between progress lines")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the generator's own CPU profile to this file (where the bench's CPU goes)")
}

func (c *common) env(stdout, stderr io.Writer) (Env, error) {
	if c.anon {
		return Env{Stdout: stdout, Stderr: stderr, Tokens: AnonTokens{}, ProgressEvery: c.progressEvery}, nil
	}
	acc := &Accounts{HTTPURL: c.httpURL, Password: c.password, DataDir: c.data, TTL: c.ttl}
	return Env{Stdout: stdout, Stderr: stderr, Tokens: acc, ProgressEvery: c.progressEvery}, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no mode given", errUsage)
	}
	mode, args := args[0], args[1:]
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	// The profile starts once the flags are parsed (the modes parse them)
	// and stops when the mode returns.
	defer func() {
		if c.cpuProfile != "" {
			pprof.StopCPUProfile()
		}
	}()
	switch mode {
	case "conns":
		cfg := ConnsConfig{}
		fs.IntVar(&cfg.N, "n", 10000, "connections to open")
		fs.IntVar(&cfg.Users, "users", 100, "distinct users (connections are their devices)")
		fs.IntVar(&cfg.Step, "step", 1000, "sample the server's RSS every this many connections")
		fs.IntVar(&cfg.Concurrency, "concurrency", 32, "connections being opened at once")
		fs.DurationVar(&cfg.Settle, "settle", 10*time.Second, "wait this long after the last connection before the final RSS reading")
		fs.DurationVar(&cfg.Hold, "hold", 0, "keep the connections open this long after measuring")
		ka := fs.Uint("keepalive", 60, "MQTT keepalive in seconds")
		fs.BoolVar(&cfg.Subscribe, "subscribe", false, "subscribe every connection to user/{me}/newMessage")
		if err := parse(fs, args); err != nil {
			return ignoreHelp(err)
		}
		if *ka < 1 || *ka > 65535 {
			return fmt.Errorf("%w: --keepalive must be 1..65535", errUsage)
		}
		cfg.KeepAlive = uint16(*ka)
		return runConnsCmd(ctx, cfg, &c, "", "", stdout, stderr)
	case "latency", "throughput":
		cfg := LoadConfig{}
		defSenders, defDuration, defInflight := 100, 30*time.Second, 16
		if mode == "throughput" {
			defSenders, defDuration, defInflight = 20, 10*time.Second, 32
		}
		fs.IntVar(&cfg.Senders, "senders", defSenders, "sending users, one connection each")
		fs.IntVar(&cfg.Receivers, "receivers", 10, "receiving users (messages go round robin)")
		fs.IntVar(&cfg.InFlight, "inflight", defInflight, "outstanding QoS 1 publishes per sender")
		fs.DurationVar(&cfg.Duration, "duration", defDuration, "measured time")
		fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured time before it")
		fs.IntVar(&cfg.Size, "size", 100, "message body bytes")
		fs.BoolVar(&cfg.Deliver, "deliver", false, "receivers subscribe; also measure publish→delivery latency")
		fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "latency: how long after the end a sender behind its schedule may still send the publishes due before it; with --deliver, also how long to wait for the last deliveries")
		fs.StringVar(&cfg.Client, "client", clientRaw, "MQTT client of the generator: raw (lean, pipelined) or paho (for comparison)")
		fs.StringVar(&cfg.Samples, "samples", "", "write every measured PUBACK to this file: send time (Unix ns) and latency (ns), one per line")
		if mode == "latency" {
			fs.Float64Var(&cfg.Rate, "rate", 1000, "total messages per second over all senders")
		}
		if err := parse(fs, args); err != nil {
			return ignoreHelp(err)
		}
		if mode == "latency" && cfg.Rate <= 0 {
			return fmt.Errorf("%w: --rate must be positive", errUsage)
		}
		return runLoadCmd(ctx, cfg, &c, stdout, stderr)
	case "idle":
		cfg := ConnsConfig{}
		fs.IntVar(&cfg.N, "n", 5000, "connections to open")
		fs.IntVar(&cfg.Step, "step", 1000, "sample the server's RSS every this many connections")
		fs.IntVar(&cfg.Concurrency, "concurrency", 32, "connections being opened at once")
		fs.DurationVar(&cfg.Settle, "settle", 5*time.Second, "wait this long after the last connection before the final RSS reading")
		fs.IntVar(&cfg.Users, "users", 0, "distinct users (0: one per connection with --anon, 100 with accounts: each costs an argon2 registration)")
		target := fs.String("target", "", "label of the broker measured, for the report")
		if err := parse(fs, args); err != nil {
			return ignoreHelp(err)
		}
		// No subscriptions: the plain brokers have no chat topics.
		if cfg.Users <= 0 {
			cfg.Users = cfg.N
			if !c.anon {
				cfg.Users = 100
			}
		}
		cfg.KeepAlive = 60
		return runConnsCmd(ctx, cfg, &c, "idle", *target, stdout, stderr)
	case "dm", "rooms":
		var sf scenarioFlags
		sf.register(fs, 64)
		cfg := FanoutConfig{Scenario: mode}
		qos := fs.Uint("qos", 0, "QoS of publishes and subscriptions (0 or 1)")
		if mode == "dm" {
			fs.IntVar(&cfg.Topics, "pairs", 50, "pairs of connections (publisher → subscriber, one topic each)")
			cfg.Subs = 1
		} else {
			fs.IntVar(&cfg.Topics, "topics", 10, "topics (rooms), one publisher each")
			fs.IntVar(&cfg.Subs, "subs", 10, "subscribers per topic")
		}
		if err := parse(fs, args); err != nil {
			return ignoreHelp(err)
		}
		if *qos > 1 {
			return fmt.Errorf("%w: --qos must be 0 or 1", errUsage)
		}
		cfg.QoS = byte(*qos)
		return runFanoutCmd(ctx, cfg, &sf, &c, stdout, stderr)
	case "durable":
		var sf scenarioFlags
		sf.register(fs, 100)
		cfg := DurableConfig{}
		fs.IntVar(&cfg.Senders, "senders", 50, "sending users, one connection each")
		fs.IntVar(&cfg.Receivers, "receivers", 10, "receiving users, subscribed (messages go round robin)")
		fs.StringVar(&cfg.Client, "client", clientRaw, "MQTT client of the generator: raw (lean, pipelined) or paho (for comparison)")
		if err := parse(fs, args); err != nil {
			return ignoreHelp(err)
		}
		return runDurableCmd(ctx, cfg, &sf, &c, stdout, stderr)
	case "group":
		cfg := GroupConfig{}
		fs.IntVar(&cfg.Members, "members", 10000, "members of the group, the owner (the sender) included")
		fs.IntVar(&cfg.Online, "online", 1000, "members connected and subscribed to the group's topic")
		fs.IntVar(&cfg.Messages, "messages", 60, "group messages to send")
		fs.Float64Var(&cfg.Rate, "rate", 2, "group messages per second")
		qos := fs.Uint("qos", 0, "QoS of the members' subscriptions (0 or 1)")
		fs.IntVar(&cfg.Size, "size", 100, "message body bytes")
		fs.DurationVar(&cfg.Drain, "drain", 30*time.Second, "how long to wait for the last deliveries")
		conc := fs.Int("concurrency", 8, "account registrations at once (argon2id: tens of ms of server CPU each, only the first time)")
		target := fs.String("target", "", "label of the system measured, for the report")
		if err := parse(fs, args); err != nil {
			return ignoreHelp(err)
		}
		if *qos > 1 {
			return fmt.Errorf("%w: --qos must be 0 or 1", errUsage)
		}
		cfg.QoS = byte(*qos)
		return runGroupCmd(ctx, cfg, *conc, *target, &c, stdout, stderr)
	case "seed":
		cfg := SeedConfig{}
		fs.StringVar(&cfg.ClusterAddr, "cluster-addr", "", "the --cluster-addr edgechat serve will use on --data (Raft remembers it)")
		fs.StringVar(&cfg.NodeID, "node-id", "", "the --node-id edgechat serve will use (default n1)")
		members := fs.Int("members", 10000, "accounts of the group scenario to create: its owner and members-1 members")
		if err := parse(fs, args); err != nil {
			return ignoreHelp(err)
		}
		if *members < 2 {
			return fmt.Errorf("%w: --members must be at least 2", errUsage)
		}
		if err := validPrefix(c.prefix); err != nil {
			return err
		}
		owner, ms := groupUsers(c.prefix, *members)
		cfg.DataDir, cfg.Password, cfg.Users = c.data, c.password, append([]string{owner}, ms...)
		env, err := c.env(stdout, stderr)
		if err != nil {
			return err
		}
		return RunSeed(ctx, cfg, env)
	case "history":
		cfg := HistoryConfig{}
		fs.IntVar(&cfg.Stored, "n", 10000, "messages to store before reading (0: read what is there)")
		fs.IntVar(&cfg.Devices, "devices", 8, "sending connections for the fill")
		fs.IntVar(&cfg.InFlight, "inflight", 16, "outstanding publishes per fill connection")
		fs.IntVar(&cfg.Size, "size", 100, "message body bytes")
		fs.IntVar(&cfg.PageSize, "page", 50, "history page size")
		fs.IntVar(&cfg.Pages, "pages", 200, "deep paging: history pages walked back from the newest")
		fs.IntVar(&cfg.SyncLimit, "sync-limit", 1000, "messages per sync page")
		fs.IntVar(&cfg.SyncPages, "sync-pages", 100, "sync pages walked from the start at most")
		fs.IntVar(&cfg.Repeat, "repeat", 200, "requests of the newest page and of the conversation list")
		target := fs.String("target", "", "label of the broker measured, for the report")
		if err := parse(fs, args); err != nil {
			return ignoreHelp(err)
		}
		return runHistoryCmd(ctx, cfg, &c, *target, stdout, stderr)
	case "fsync":
		ff := flag.NewFlagSet(mode, flag.ContinueOnError)
		ff.SetOutput(stderr)
		var fc FsyncConfig
		ff.StringVar(&fc.Dir, "dir", ".", "directory on the disk to probe (a node's data directory)")
		ff.IntVar(&fc.N, "n", 2000, "writes")
		ff.IntVar(&fc.Size, "size", 4096, "bytes per write")
		if err := parse(ff, args); err != nil {
			return ignoreHelp(err)
		}
		r, err := RunFsync(ctx, fc)
		if err != nil {
			return err
		}
		printFsync(stdout, fc, r)
		return nil
	case "freeport":
		fp := flag.NewFlagSet(mode, flag.ContinueOnError)
		fp.SetOutput(stderr)
		n := fp.Int("n", 1, "ports")
		if err := parse(fp, args); err != nil {
			return ignoreHelp(err)
		}
		ports, err := FreePorts(*n)
		if err != nil {
			return err
		}
		for _, p := range ports {
			fmt.Fprintln(stdout, p)
		}
		return nil
	case "report":
		rf := flag.NewFlagSet(mode, flag.ContinueOnError)
		rf.SetOutput(stderr)
		var rc ReportConfig
		rf.StringVar(&rc.Dir, "dir", "", "results directory written by scripts/bench-compare.sh")
		rf.StringVar(&rc.Out, "out", "docs/perf/README.md", "the Markdown report to write (charts go next to it)")
		rf.StringVar(&rc.Commands, "commands", "", "file holding the exact commands that were run")
		rf.StringVar(&rc.Note, "note", "", "a paragraph about the conditions of the run")
		if err := parse(rf, args); err != nil {
			return ignoreHelp(err)
		}
		if rc.Dir == "" {
			return fmt.Errorf("%w: report needs --dir", errUsage)
		}
		return WriteReport(rc)
	case "refserver":
		rs := flag.NewFlagSet(mode, flag.ContinueOnError)
		rs.SetOutput(stderr)
		listen := rs.String("listen", "127.0.0.1:21883", "MQTT address to listen on")
		if err := parse(rs, args); err != nil {
			return ignoreHelp(err)
		}
		return RunRefServer(ctx, *listen, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("%w: unknown mode %q", errUsage, mode)
	}
}

// errHelp stops a run after -h printed the flags.
var errHelp = errors.New("help shown")

func ignoreHelp(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if f := fs.Lookup("cpuprofile"); f != nil && f.Value.String() != "" {
		out, err := os.Create(f.Value.String())
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	return nil
}

// runConnsCmd runs the conns mode, or the idle scenario when mode is
// "idle" (the same measurement, labelled for the comparison report).
func runConnsCmd(ctx context.Context, cfg ConnsConfig, c *common, mode, target string, stdout, stderr io.Writer) error {
	addr, err := mqttAddr(c.mqtt)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg.MQTTAddr, cfg.PID, cfg.Prefix = addr, c.pid, c.prefix
	env, err := c.env(stdout, stderr)
	if err != nil {
		return err
	}
	res, err := RunConns(ctx, cfg, env)
	if err != nil {
		return err
	}
	if mode != "" {
		res.Mode, res.Target = mode, target
	}
	if err := PrintConns(stdout, res); err != nil {
		return err
	}
	return writeOutputs(c, res, func() (Chart, bool) { return ConnsChart(res), len(res.Samples) > 0 }, stderr)
}

func runLoadCmd(ctx context.Context, cfg LoadConfig, c *common, stdout, stderr io.Writer) error {
	addrs, err := mqttAddrs(c.mqtt)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg.MQTTAddr, cfg.PID, cfg.PIDs, cfg.Prefix = addrs[0], c.pid, c.pids, c.prefix
	if len(addrs) > 1 {
		cfg.MQTTAddrs = addrs
	}
	if !c.anon {
		cfg.HTTPURL = c.httpURL
	}
	env, err := c.env(stdout, stderr)
	if err != nil {
		return err
	}
	res, err := RunLoad(ctx, cfg, env)
	if err != nil {
		return err
	}
	if err := PrintLoad(stdout, res); err != nil {
		return err
	}
	return writeOutputs(c, res, func() (Chart, bool) { return LoadChart(res), len(res.pubackSorted) > 0 }, stderr)
}

func writeOutputs(c *common, res any, chart func() (Chart, bool), stderr io.Writer) error {
	if c.out != "" {
		if err := WriteJSON(c.out, res); err != nil {
			return err
		}
	}
	if c.chart != "" {
		ch, ok := chart()
		if !ok {
			fmt.Fprintf(stderr, "warning: nothing to chart (conns needs --pid; latency needs committed messages); %s not written\n", c.chart)
			return nil
		}
		if err := WriteChart(c.chart, ch); err != nil {
			return err
		}
	}
	return nil
}

func runFanoutCmd(ctx context.Context, cfg FanoutConfig, sf *scenarioFlags, c *common, stdout, stderr io.Writer) error {
	rates, err := sf.rates()
	if err != nil {
		return err
	}
	if cfg.Addrs, err = sf.addrs(c); err != nil {
		return err
	}
	cfg.PIDs, cfg.Prefix, cfg.Size, cfg.InFlight = c.pids, c.prefix, sf.size, sf.inflight
	cfg.Duration, cfg.Warmup, cfg.Drain = sf.duration, sf.warmup, sf.drain
	// Plain MQTT: no accounts, whatever the broker.
	env := Env{Stdout: stdout, Stderr: stderr, Tokens: AnonTokens{}, ProgressEvery: c.progressEvery}
	run, err := newFanoutRun(ctx, cfg, env)
	if err != nil {
		return err
	}
	defer run.close()
	res := &ScenarioResult{Scenario: cfg.Scenario, Target: sf.target, Transport: transportOf(cfg.Addrs), Params: map[string]any{
		"qos": cfg.QoS, "topics": cfg.Topics, "subs": cfg.Subs, "size": cfg.Size, "duration": cfg.Duration.String(), "nodes": len(cfg.Addrs)}}
	if cfg.Scenario == "dm" {
		res.Params["pairs"] = cfg.Topics
		delete(res.Params, "topics")
		delete(res.Params, "subs")
	}
	if err := runSteps(ctx, sf, rates, run.run, res); err != nil {
		return err
	}
	return finishScenario(c, res, stdout, stderr)
}

func runDurableCmd(ctx context.Context, cfg DurableConfig, sf *scenarioFlags, c *common, stdout, stderr io.Writer) error {
	rates, err := sf.rates()
	if err != nil {
		return err
	}
	if cfg.Addrs, err = sf.addrs(c); err != nil {
		return err
	}
	cfg.PIDs, cfg.Prefix, cfg.Size, cfg.InFlight = c.pids, c.prefix, sf.size, sf.inflight
	cfg.Duration, cfg.Warmup, cfg.Drain = sf.duration, sf.warmup, sf.drain
	env, err := c.env(stdout, stderr)
	if err != nil {
		return err
	}
	run, err := newDurableRun(ctx, cfg, env)
	if err != nil {
		return err
	}
	defer run.close()
	res := &ScenarioResult{Scenario: "durable", Target: sf.target, Transport: transportOf(cfg.Addrs), Params: map[string]any{
		"senders": cfg.Senders, "receivers": cfg.Receivers, "size": cfg.Size, "client": run.cfg.Client, "duration": cfg.Duration.String(), "nodes": len(cfg.Addrs)}}
	if err := runSteps(ctx, sf, rates, run.run, res); err != nil {
		return err
	}
	return finishScenario(c, res, stdout, stderr)
}

func finishScenario(c *common, res *ScenarioResult, stdout, stderr io.Writer) error {
	if err := PrintScenario(stdout, res); err != nil {
		return err
	}
	return writeOutputs(c, res, func() (Chart, bool) { return RateChart(res), len(res.Steps) > 0 && res.Steps[0].Latency.Count > 0 }, stderr)
}

func runGroupCmd(ctx context.Context, cfg GroupConfig, concurrency int, target string, c *common, stdout, stderr io.Writer) error {
	addrs, err := mqttAddrs(c.mqtt)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg.Addrs, cfg.HTTPURL, cfg.PIDs, cfg.Prefix = addrs, strings.TrimRight(c.httpURL, "/"), c.pids, c.prefix
	env, err := c.env(stdout, stderr)
	if err != nil {
		return err
	}
	if acc, ok := env.Tokens.(*Accounts); ok {
		acc.Concurrency = concurrency
	}
	res, err := RunGroup(ctx, cfg, env)
	if err != nil {
		return err
	}
	res.Target = target
	if err := PrintGroup(stdout, res); err != nil {
		return err
	}
	return writeOutputs(c, res, func() (Chart, bool) { return Chart{}, false }, stderr)
}

func runHistoryCmd(ctx context.Context, cfg HistoryConfig, c *common, target string, stdout, stderr io.Writer) error {
	addr, err := mqttAddr(c.mqtt)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg.Addr, cfg.HTTPURL, cfg.PIDs, cfg.Prefix = addr, c.httpURL, c.pids, c.prefix
	env, err := c.env(stdout, stderr)
	if err != nil {
		return err
	}
	res, err := RunHistory(ctx, cfg, env)
	if err != nil {
		return err
	}
	res.Target = target
	if err := PrintHistory(stdout, res); err != nil {
		return err
	}
	return writeOutputs(c, res, func() (Chart, bool) { return Chart{}, false }, stderr)
}
