package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// Helpers shared by the multi-process tests: building the binary,
// running `edgechat serve` processes, a three-node cluster of them,
// reconnecting load senders and the "every acknowledged message once, in
// order, on every node" check.

// checkFor is testutil.CheckFor: poll until fn succeeds or fail after total.
var checkFor = testutil.CheckFor

// buildOnce compiles edgechat once per test binary run.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func edgechatBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edgechat-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "edgechat")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// proc is one running `edgechat serve`.
type proc struct {
	cmd     *exec.Cmd
	http    string
	mqtt    string
	cluster string
	logs    *logSink
	ready   chan map[string]any
	exited  chan struct{} // closed once Wait returned; err is then set
	err     error
}

// logSink keeps a process's stderr and spots the "serving" line. Used as
// cmd.Stderr, so Wait returns only after the last line is in.
type logSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	part  []byte
	ready chan map[string]any
	sent  bool
}

func (s *logSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(b)
	if s.buf.Len() > 4<<20 { // keep the tail: chaos runs restart nodes many times
		tail := append([]byte(nil), s.buf.Bytes()[s.buf.Len()-(2<<20):]...)
		s.buf.Reset()
		s.buf.Write(tail)
	}
	s.part = append(s.part, b...)
	for {
		i := bytes.IndexByte(s.part, '\n')
		if i < 0 {
			break
		}
		line := s.part[:i]
		var m map[string]any
		if !s.sent && json.Unmarshal(line, &m) == nil && m["msg"] == "edgechat node serving" {
			s.sent = true
			s.ready <- m
		}
		s.part = s.part[i+1:]
	}
	return len(b), nil
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// startProc starts `[prefix...] bin serve --log-format json args...`
// without waiting for it to serve (a node restarted alone waits for a
// quorum). prefix is e.g. `ip netns exec NS`, which execs, so the pid is
// edgechat's own.
func startProc(t *testing.T, prefix []string, bin string, args ...string) *proc {
	t.Helper()
	argv := append(append(append([]string(nil), prefix...), bin, "serve", "--log-format", "json"), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	p := &proc{cmd: cmd, ready: make(chan map[string]any, 1), exited: make(chan struct{})}
	p.logs = &logSink{ready: p.ready}
	cmd.Stderr = p.logs
	dieWithTheTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			var kept []string
			for _, line := range strings.Split(p.logs.String(), "\n") {
				if !strings.Contains(line, `"msg":"http request"`) { // the sync polls drown the rest
					kept = append(kept, line)
				}
			}
			logs := strings.Join(kept, "\n")
			if len(logs) > 64<<10 {
				logs = "...\n" + logs[len(logs)-64<<10:]
			}
			t.Logf("server log of %v:\n%s", args, logs)
		}
	})
	return p
}

// waitServing waits for the "edgechat node serving" log line and takes
// the bound addresses from it.
func (p *proc) waitServing(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case m := <-p.ready:
		p.http, _ = m["http"].(string)
		p.mqtt, _ = m["mqtt"].(string)
		p.cluster, _ = m["cluster"].(string)
	case <-p.exited:
		t.Fatalf("edgechat serve exited before serving: %v", p.err)
	case <-time.After(within):
		t.Fatal("edgechat serve did not report its addresses")
	}
}

// startServe runs `edgechat serve` and waits for the log line with the
// bound addresses.
func startServe(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := startProc(t, nil, bin, args...)
	p.waitServing(t, 60*time.Second)
	return p
}

// stop sends sig and waits for the exit; after SIGTERM the exit must be 0.
func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		if sig == syscall.SIGTERM && p.err != nil {
			t.Fatalf("edgechat exited with %v after SIGTERM", p.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("edgechat did not exit")
	}
}

func runCLI(t *testing.T, bin, stdin string, args ...string) string {
	t.Helper()
	out, err := runCLIErr(bin, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runCLIErr(bin, stdin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("edgechat %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func dialV5(t *testing.T, addr, clientID, user, token string) *paho.Client {
	t.Helper()
	return mqtttest.MustDial(t, addr, v5Options(clientID, user, token)).Client
}

// dialV5Err connects an MQTT v5 client outside the test's lifetime (the
// load's goroutines); the caller disconnects it.
func dialV5Err(addr, clientID, user, token string) (*paho.Client, error) {
	c, _, err := mqtttest.Open(addr, v5Options(clientID, user, token))
	if err != nil {
		return nil, err
	}
	return c.Client, nil
}

func v5Options(clientID, user, token string) mqtttest.Options {
	return mqtttest.Options{ClientID: clientID, Username: user, Password: token, Timeout: 5 * time.Second}
}

// httpJSON does one request with a bearer token (none when empty) and
// decodes a JSON answer into out (when not nil); it returns the status.
func httpJSON(method, url, token string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// Checks poll the node; they wait out its rate limits (429 with
	// Retry-After) rather than take a refusal for a failure.
	resp, err := ratelimit.DoHTTP(&http.Client{Timeout: 10 * time.Second}, req, 0)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, url, err)
		}
	}
	return resp.StatusCode, nil
}

// mintToken runs `edgechat token user` against the first of procs that
// is ready (the command asks a running node for the account, and a killed
// or cut-off node cannot answer), signing with the keys in dataDir.
func mintToken(t *testing.T, bin, dataDir, user string, procs ...*proc) string {
	t.Helper()
	for _, p := range procs {
		if p != nil && readyz(p.http) == http.StatusOK {
			return runCLI(t, bin, "", "token", user, "--data", dataDir, "--server", p.http)
		}
	}
	t.Fatalf("no ready node to mint a token for %s", user)
	return ""
}

// readyz returns the status of GET /readyz (0 when unreachable).
func readyz(httpURL string) int {
	code, _ := httpJSON("GET", httpURL+"/readyz", "", nil, nil)
	return code
}

// syncedMsg is one message of a sync stream.
type syncedMsg struct {
	ID, From, CID, Body string
}

// syncMessages reads the whole sync stream of a user from one node, in
// commit order.
func syncMessages(httpURL, token string) ([]syncedMsg, error) {
	var all []syncedMsg
	cursor := ""
	for {
		var page struct {
			Messages []syncedMsg
			Cursor   string
			HasMore  bool
		}
		if _, err := httpJSON("GET", httpURL+"/chat/sync?limit=1000&since="+cursor, token, nil, &page); err != nil {
			return all, err
		}
		all = append(all, page.Messages...)
		cursor = page.Cursor
		if !page.HasMore {
			return all, nil
		}
	}
}

// syncAll reads the whole sync stream of a user from one node: how often
// each cid occurs and, per sender, the numeric bodies in commit order.
func syncAll(t *testing.T, httpURL, token string) (map[string]int, map[string][]int) {
	got := map[string]int{}
	order := map[string][]int{}
	msgs, _ := syncMessages(httpURL, token) // a node still catching up answers what it has
	for _, m := range msgs {
		got[m.CID]++
		var k int
		fmt.Sscanf(m.Body, "%d", &k)
		order[m.From] = append(order[m.From], k)
	}
	return got, order
}

// statusLine is the header line of `edgechat cluster status`.
var statusLine = regexp.MustCompile(`^node (\S+): (\S+), leader (\S*), term (\d+)`)

// nodeView is what one node says of the cluster.
type nodeView struct {
	Node, State, Leader string
	Term                int
	Raw                 string
}

func clusterStatus(bin, httpURL, dataDir string) (nodeView, error) {
	out, err := runCLIErr(bin, "", "cluster", "status", "--server", httpURL, "--data", dataDir)
	if err != nil {
		return nodeView{}, err
	}
	m := statusLine.FindStringSubmatch(out)
	if m == nil {
		return nodeView{}, fmt.Errorf("cluster status said %q", out)
	}
	v := nodeView{Node: m[1], State: m[2], Leader: m[3], Raw: out}
	fmt.Sscanf(m[4], "%d", &v.Term)
	return v, nil
}

// testCluster is three `edgechat serve` processes on 127.0.0.1.
type testCluster struct {
	t    *testing.T
	bin  string
	dirs []string
	// extra are more flags for every node (also on a restart).
	extra []string

	mu    sync.Mutex
	procs []*proc
}

func (c *testCluster) args(i int, clusterAddr, join string) []string {
	a := []string{"--data", c.dirs[i], "--node-id", fmt.Sprintf("n%d", i+1), "--http-addr", "127.0.0.1:0",
		"--mqtt-addr", "127.0.0.1:0", "--cluster-addr", clusterAddr, "--mqtt-publish-rate", "off"}
	if join != "" {
		a = append(a, "--join", join)
	}
	return append(a, c.extra...)
}

// startCluster3 starts n1, then n2 and n3 joining it, and waits until
// every node sees three members and a leader. extra are flags for every
// node.
func startCluster3(t *testing.T, extra ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, bin: edgechatBinary(t), dirs: []string{t.TempDir(), t.TempDir(), t.TempDir()}, extra: extra}
	c.procs = make([]*proc, 3)
	c.procs[0] = startServe(t, c.bin, c.args(0, "127.0.0.1:0", "")...)
	for i := 1; i < 3; i++ {
		c.procs[i] = startServe(t, c.bin, c.args(i, "127.0.0.1:0", c.procs[0].cluster)...)
	}
	c.waitFormed(30 * time.Second)
	return c
}

// waitFormed waits until every node names the same leader.
func (c *testCluster) waitFormed(within time.Duration) {
	c.t.Helper()
	checkFor(c.t, within, 100*time.Millisecond, func() error {
		_, err := c.leader()
		return err
	})
}

// leader asks every node; they must all name the same leader, and only
// that node may call itself the leader.
func (c *testCluster) leader() (int, error) {
	lead := ""
	for i := range 3 {
		v, err := clusterStatus(c.bin, c.proc(i).http, c.dirs[0])
		if err != nil {
			return -1, err
		}
		if v.Leader == "" || (lead != "" && v.Leader != lead) {
			return -1, fmt.Errorf("no single leader: n%d says %q, another %q", i+1, v.Leader, lead)
		}
		if v.State == "Leader" && v.Node != v.Leader {
			return -1, fmt.Errorf("split brain: %s is Leader but names %s", v.Node, v.Leader)
		}
		lead = v.Leader
		if strings.Count(v.Raw, "\n") < 4 {
			return -1, fmt.Errorf("n%d does not list three members:\n%s", i+1, v.Raw)
		}
	}
	return int(lead[len(lead)-1] - '1'), nil
}

func (c *testCluster) proc(i int) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i]
}

// mqttAddrs lists the nodes' MQTT addresses, pref's first.
func (c *testCluster) mqttAddrs(pref int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.procs {
		out = append(out, c.procs[(pref+k)%len(c.procs)].mqtt)
	}
	return out
}

// restart stops node i with sig and starts it again on its data dir and
// cluster address, waiting until /readyz answers 200.
func (c *testCluster) restart(i int, sig syscall.Signal) (down, back time.Duration) {
	c.t.Helper()
	old := c.proc(i)
	t0 := time.Now()
	old.stop(c.t, sig)
	down = time.Since(t0)
	t1 := time.Now()
	p := startServe(c.t, c.bin, c.args(i, old.cluster, "")...)
	checkFor(c.t, 30*time.Second, 50*time.Millisecond, func() error {
		if code := readyz(p.http); code != 200 {
			return fmt.Errorf("n%d /readyz %d", i+1, code)
		}
		return nil
	})
	c.mu.Lock()
	c.procs[i] = p
	c.mu.Unlock()
	return down, time.Since(t1)
}

// addUsers creates accounts on node 0 and mints their tokens.
func (c *testCluster) addUsers(password string, names ...string) map[string]string {
	c.t.Helper()
	tokens := map[string]string{}
	for _, u := range names {
		runCLI(c.t, c.bin, password+"\n", "user", "add", u, "--password-stdin", "--server", c.proc(0).http)
		tokens[u] = mintToken(c.t, c.bin, c.dirs[0], u, c.proc(0))
	}
	return tokens
}

// sender publishes durable DMs to one recipient until stopped,
// reconnecting to another node when its own goes away. Every publish has
// a new cid (name-k) and body k.
type sender struct {
	name string
	pad  string // after k in every body (a load that must fill the database fast)

	mu         sync.Mutex
	acked      []int
	ackedAt    []time.Time
	refused    int
	failed     int
	reconnects int
}

func (s *sender) snapshot() (acked, refused, failed, reconnects int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked), s.refused, s.failed, s.reconnects
}

// load is a set of senders running in the background.
type load struct {
	senders []*sender
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

// startLoad starts one sender per name; sender i prefers node i of
// addrs (which is asked again on every reconnect: restarted nodes have
// new ports).
func startLoad(tokens map[string]string, names []string, to string, addrs func(pref int) []string) *load {
	return startPaddedLoad(tokens, names, to, addrs, 0)
}

// startPaddedLoad is startLoad with pad more bytes in every body.
func startPaddedLoad(tokens map[string]string, names []string, to string, addrs func(pref int) []string, pad int) *load {
	l := &load{stop: make(chan struct{})}
	for i, name := range names {
		s := &sender{name: name}
		if pad > 0 {
			s.pad = " " + strings.Repeat("x", pad-1)
		}
		l.senders = append(l.senders, s)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			s.run(i, tokens[name], to, addrs, l.stop)
		}()
	}
	return l
}

// finish stops the senders and waits for them; later calls do nothing
// more (a test may finish early and also in its cleanup).
func (l *load) finish() {
	l.stopped.Do(func() { close(l.stop) })
	l.wg.Wait()
}

func (l *load) total() int {
	n := 0
	for _, s := range l.senders {
		a, _, _, _ := s.snapshot()
		n += a
	}
	return n
}

// waitProgress waits until the senders together have n more acknowledged
// messages than now, and returns how long that took.
func (l *load) waitProgress(t *testing.T, n int, within time.Duration) time.Duration {
	t.Helper()
	start, t0 := l.total(), time.Now()
	checkFor(t, within, 20*time.Millisecond, func() error {
		if got := l.total() - start; got < n {
			return fmt.Errorf("only %d more messages acknowledged", got)
		}
		return nil
	})
	return time.Since(t0)
}

func (s *sender) run(pref int, token, to string, addrs func(int) []string, stop chan struct{}) {
	var c *paho.Client
	defer func() {
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
	}()
	pause := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	conns := 0
	for k := 0; ; {
		select {
		case <-stop:
			return
		default:
		}
		if c == nil {
			for _, a := range addrs(pref) {
				var err error
				if c, err = dialV5Err(a, fmt.Sprintf("%s/load%d", s.name, conns), s.name, token); err == nil {
					break
				}
			}
			if c == nil {
				if !pause(100 * time.Millisecond) {
					return
				}
				continue
			}
			if conns++; conns > 1 {
				s.mu.Lock()
				s.reconnects++
				s.mu.Unlock()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
		// paho does not fail a publish on a connection that is already
		// gone; it waits out the context. Give up once the client is down.
		go func(done <-chan struct{}) {
			select {
			case <-done:
				cancel()
			case <-ctx.Done():
			}
		}(c.Done())
		pr, err := c.Publish(ctx, &paho.Publish{Topic: "user/" + to + "/newMessage", QoS: 1,
			Payload: []byte(fmt.Sprintf(`{"cid":"%s-%d","type":"text","body":"%d%s"}`, s.name, k, k, s.pad))})
		cancel()
		switch {
		case pr != nil && pr.ReasonCode >= 0x80:
			// Refused: not committed (an election, a minority). Not acknowledged.
			s.mu.Lock()
			s.refused++
			s.mu.Unlock()
			if !pause(20 * time.Millisecond) {
				return
			}
		case err != nil:
			// The node went away (or the PUBACK never came): not acknowledged.
			s.mu.Lock()
			s.failed++
			s.mu.Unlock()
			_ = c.Disconnect(&paho.Disconnect{})
			c = nil
		default:
			s.mu.Lock()
			s.acked = append(s.acked, k)
			s.ackedAt = append(s.ackedAt, time.Now())
			s.mu.Unlock()
		}
		k++
	}
}

// longestGap is the longest time between two consecutive acknowledgements
// (of any sender) between from and to.
func (l *load) longestGap(from, to time.Time) time.Duration {
	var ts []time.Time
	for _, s := range l.senders {
		s.mu.Lock()
		for _, at := range s.ackedAt {
			if !at.Before(from) && !at.After(to) {
				ts = append(ts, at)
			}
		}
		s.mu.Unlock()
	}
	if len(ts) == 0 {
		return to.Sub(from)
	}
	sortTimes(ts)
	gap := ts[0].Sub(from)
	for i := 1; i < len(ts); i++ {
		gap = max(gap, ts[i].Sub(ts[i-1]))
	}
	return max(gap, to.Sub(ts[len(ts)-1]))
}

func sortTimes(ts []time.Time) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].Before(ts[j-1]); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// errIncomplete marks a node that does not yet hold every acknowledged
// message (it may still be catching up).
var errIncomplete = errors.New("acknowledged messages missing")

// checkAcked checks one node's sync stream for the recipient: every
// acknowledged message of every sender exactly once, no message twice,
// and the acknowledged ones of each sender in the order they were sent.
func checkAcked(httpURL, token string, senders []*sender) (int, error) {
	msgs, err := syncMessages(httpURL, token)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errIncomplete, err)
	}
	count := map[string]int{}
	for _, m := range msgs {
		count[m.CID]++
	}
	total := 0
	var missing []string
	for _, s := range senders {
		s.mu.Lock()
		acked := append([]int(nil), s.acked...)
		s.mu.Unlock()
		want := map[int]bool{}
		for _, k := range acked {
			want[k] = true
			cid := fmt.Sprintf("%s-%d", s.name, k)
			switch n := count[cid]; {
			case n == 0:
				missing = append(missing, cid)
			case n > 1:
				return 0, fmt.Errorf("%s holds acknowledged %s %d times", httpURL, cid, n)
			}
		}
		total += len(acked)
		last := -1
		for _, m := range msgs {
			if m.From != s.name {
				continue
			}
			var k int
			fmt.Sscanf(m.Body, "%d", &k)
			if !want[k] {
				continue // refused or unanswered, yet committed: allowed ("may still commit")
			}
			if k <= last {
				return 0, fmt.Errorf("%s: sender %s out of order: %d after %d", httpURL, s.name, k, last)
			}
			last = k
		}
	}
	for cid, n := range count {
		if n > 1 {
			return 0, fmt.Errorf("%s stores %s %d times", httpURL, cid, n)
		}
	}
	if len(missing) > 0 {
		return 0, fmt.Errorf("%w: %s (%d messages in sync) lacks %d: %v", errIncomplete, httpURL, len(msgs), len(missing), missing[:min(len(missing), 20)])
	}
	return total, nil
}

// verifyAcked waits (up to within) until the node holds every
// acknowledged message; a duplicate or an order violation fails at once.
// It returns how long the node took to converge.
func verifyAcked(t *testing.T, httpURL, token string, senders []*sender, within time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	var total int
	checkFor(t, within, 100*time.Millisecond, func() error {
		n, err := checkAcked(httpURL, token, senders)
		if err != nil && !errors.Is(err, errIncomplete) {
			t.Fatal(err)
		}
		total = n
		return err
	})
	t.Logf("%s: all %d acknowledged messages present once, in per-sender order", httpURL, total)
	return time.Since(t0)
}

// killLoad keeps numbered direct messages to one user in flight from
// several goroutines (each publishes and waits for its PUBACK) until
// stopped, recording the cids acknowledged: the load of the tests that
// SIGKILL a node under it. A failure before killed is set fails the test.
type killLoad struct {
	killed   atomic.Bool
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu    sync.Mutex
	acked []string
}

// startKillLoad starts perClient goroutines on each client publishing to
// user/{to}/newMessage with cids "c{client}-g{goroutine}-{n}".
func startKillLoad(t *testing.T, clients []*paho.Client, perClient int, to string) *killLoad {
	l := &killLoad{stop: make(chan struct{})}
	// A test that ends before its kill (a failed wait) stops the load
	// before the server's cleanup does: a publisher's t.Errorf after the
	// test ended panics and fails the whole package.
	t.Cleanup(func() { l.kill(func() {}) })
	for c, client := range clients {
		for g := range perClient {
			l.wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-l.stop:
						return
					default:
					}
					cid := fmt.Sprintf("c%d-g%d-%d", c, g, i)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					pr, err := client.Publish(ctx, &paho.Publish{Topic: "user/" + to + "/newMessage", QoS: 1,
						Payload: fmt.Appendf(nil, `{"cid":%q,"type":"text","body":"under kill %d"}`, cid, i)})
					cancel()
					if err != nil || pr.ReasonCode != 0 {
						if !l.killed.Load() {
							t.Errorf("publish %s: %v %+v", cid, err, pr)
						}
						return
					}
					l.mu.Lock()
					l.acked = append(l.acked, cid)
					l.mu.Unlock()
				}
			})
		}
	}
	return l
}

// ackedSoFar is a copy of the cids acknowledged so far.
func (l *killLoad) ackedSoFar() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.acked...)
}

// kill marks what follows as the kill's doing, runs kill, and waits for
// the publishers to end; it returns every cid acknowledged.
func (l *killLoad) kill(kill func()) []string {
	l.killed.Store(true)
	kill()
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.ackedSoFar()
}
