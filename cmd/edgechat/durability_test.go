package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// buildBinary compiles edgechat once per test binary run.
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

type proc struct {
	cmd     *exec.Cmd
	http    string
	mqtt    string
	cluster string
	logs    *strings.Builder
	mu      *sync.Mutex
}

// startServe runs `edgechat serve` and waits for the log line with the
// bound addresses.
func startServe(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &strings.Builder{}, mu: &sync.Mutex{}}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("server log:\n%s", p.logs.String())
			p.mu.Unlock()
		}
	})
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "edgechat node serving" {
				ready <- m
			}
		}
	}()
	select {
	case m := <-ready:
		p.http, _ = m["http"].(string)
		p.mqtt, _ = m["mqtt"].(string)
		p.cluster, _ = m["cluster"].(string)
	case <-time.After(60 * time.Second):
		t.Fatal("edgechat serve did not report its addresses")
	}
	return p
}

func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("edgechat exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("edgechat did not exit")
	}
}

func runCLI(t *testing.T, bin, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("edgechat %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func dialV5(t *testing.T, addr, clientID, user, token string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true, Password: []byte(token), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	return c
}

// TestAcknowledgedMessagesSurviveSIGKILL is the durability promise: a
// PUBACK means committed. Several senders publish QoS 1 messages; the
// process is killed with SIGKILL right after the last PUBACK; after a
// restart on the same data dir every acknowledged message is in history
// and sync, exactly once.
func TestAcknowledgedMessagesSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real process")
	}
	bin := edgechatBinary(t)
	data := t.TempDir()
	common := []string{"--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off"}
	p := startServe(t, bin, append(common, "--cluster-addr", "127.0.0.1:0")...)

	// Operators' tools: create accounts on the running node, mint tokens from its keys.
	for _, u := range []string{"alice", "bob", "carol"} {
		out := runCLI(t, bin, "correct horse battery\n", "user", "add", u, "--password-stdin", "--server", p.http)
		if !strings.Contains(out, u) {
			t.Fatalf("user add said %q", out)
		}
	}
	tokens := map[string]string{}
	for _, u := range []string{"alice", "bob", "carol"} {
		tokens[u] = runCLI(t, bin, "", "token", u, "--data", data)
	}

	// Operator commands that sign an admin token with the node's key.
	if out := runCLI(t, bin, "", "cluster", "status", "--server", p.http, "--data", data); !strings.Contains(out, "MEMBER") || !strings.Contains(out, "n1") || !strings.Contains(out, "Leader") {
		t.Fatalf("cluster status: %q", out)
	}
	if out := runCLI(t, bin, "", "user", "grant", "carol", "admin", "--server", p.http, "--data", data); !strings.Contains(out, "carol is now an admin") {
		t.Fatalf("user grant: %q", out)
	}
	// The container health check command agrees with /readyz.
	if out := runCLI(t, bin, "", "health", "--url", p.http+"/readyz"); out != "ok" {
		t.Fatalf("edgechat health: %q", out)
	}

	const perSender = 150
	senders := []string{"alice", "carol"}
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	for _, s := range senders {
		c := dialV5(t, p.mqtt, s+"/load", s, tokens[s])
		wg.Add(1)
		go func(s string, c *paho.Client) {
			defer wg.Done()
			for i := 0; i < perSender; i++ {
				cid := fmt.Sprintf("%s-%d", s, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				pr, err := c.Publish(ctx, &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
					Payload: []byte(fmt.Sprintf(`{"cid":%q,"type":"text","body":"m %d"}`, cid, i))})
				cancel()
				if err != nil || pr.ReasonCode != 0 {
					t.Errorf("publish %s: %v %+v", cid, err, pr)
					return
				}
				mu.Lock()
				acked[cid] = true
				mu.Unlock()
			}
		}(s, c)
	}
	wg.Wait()
	p.stop(t, syscall.SIGKILL) // right after the last PUBACK
	if t.Failed() {
		return
	}

	p2 := startServe(t, bin, append(common, "--cluster-addr", p.cluster)...)
	// Sync from the start must hold every acknowledged message exactly once.
	seen := map[string]int{}
	bySender := map[string][]int{}
	cursor := ""
	for {
		req, _ := http.NewRequest("GET", p2.http+"/chat/sync?limit=1000&since="+cursor, nil)
		req.Header.Set("Authorization", "Bearer "+runCLI(t, bin, "", "token", "bob", "--data", data))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("sync: %d %s", resp.StatusCode, b)
		}
		var page struct {
			Messages []struct{ ID, From, CID, Body string }
			Cursor   string
			HasMore  bool
		}
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			seen[m.CID]++
			var i int
			fmt.Sscanf(m.Body, "m %d", &i)
			bySender[m.From] = append(bySender[m.From], i)
		}
		cursor = page.Cursor
		if !page.HasMore {
			break
		}
	}
	for cid := range acked {
		if seen[cid] != 1 {
			t.Errorf("acknowledged message %s found %d times after SIGKILL and restart", cid, seen[cid])
		}
	}
	for cid, k := range seen {
		if k > 1 {
			t.Errorf("message %s stored %d times", cid, k)
		}
	}
	// Per-sender order is kept in commit order.
	for s, seq := range bySender {
		for i := 1; i < len(seq); i++ {
			if seq[i] <= seq[i-1] {
				t.Fatalf("sender %s out of order at %d: %v", s, i, seq[i-1:i+1])
			}
		}
	}
	if len(acked) != perSender*len(senders) {
		t.Fatalf("only %d of %d publishes were acknowledged", len(acked), perSender*len(senders))
	}
	p2.stop(t, syscall.SIGTERM) // a clean shutdown exits 0
}
