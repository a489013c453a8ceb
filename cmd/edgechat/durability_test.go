package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/ratelimit"
)

// TestAcknowledgedMessagesSurviveSIGKILL is the durability promise: a
// PUBACK means committed. Several senders publish QoS 1 messages; the
// process is killed with SIGKILL right after the last PUBACK; after a
// restart on the same data dir every acknowledged message is in history
// and sync, exactly once, recovered from the Raft log (Badger's
// memtables, which held them, have no file).
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
		tokens[u] = mintToken(t, bin, data, u, p)
	}

	// Operator commands that sign an admin token with the node's key.
	if out := runCLI(t, bin, "", "cluster", "status", "--server", p.http, "--data", data); !strings.Contains(out, "MEMBER") || !strings.Contains(out, "n1") || !strings.Contains(out, "Leader") {
		t.Fatalf("cluster status: %q", out)
	}
	if out := runCLI(t, bin, "", "user", "grant", "carol", "admin", "--server", p.http, "--data", data); !strings.Contains(out, "carol is now an admin") {
		t.Fatalf("user grant: %q", out)
	}
	// The signing keys: this node's is listed, a rotation makes a new one
	// and the old one retires later (the tokens minted above still work:
	// the load below uses them); an unknown kid cannot be revoked.
	if out := runCLI(t, bin, "", "keys", "list", "--server", p.http, "--data", data); !strings.Contains(out, "signs here") {
		t.Fatalf("keys list: %q", out)
	}
	if out := runCLI(t, bin, "", "keys", "rotate", "--server", p.http, "--data", data); !strings.Contains(out, "the node signs with") {
		t.Fatalf("keys rotate: %q", out)
	}
	if out := runCLI(t, bin, "", "keys", "list", "--server", p.http, "--data", data); !strings.Contains(out, "signs here") || !strings.Contains(out, "retiring until") {
		t.Fatalf("keys list after a rotation: %q", out)
	}
	if _, err := runCLIErr(bin, "", "keys", "revoke", "no-such-kid", "--server", p.http, "--data", data); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("keys revoke of an unknown kid: %v", err)
	}
	// An operator resets a forgotten password: the old one stops working.
	runCLI(t, bin, "forgotten password\n", "user", "add", "dave", "--password-stdin", "--server", p.http)
	if out := runCLI(t, bin, "remembered password\n", "user", "passwd", "dave", "--password-stdin", "--server", p.http, "--data", data); !strings.Contains(out, "password of dave reset") {
		t.Fatalf("user passwd: %q", out)
	}
	for pw, want := range map[string]int{"forgotten password": http.StatusUnauthorized, "remembered password": http.StatusOK} {
		if st, err := httpJSON(http.MethodPost, p.http+"/auth/login", "", map[string]string{"username": "dave", "password": pw}, nil); st != want {
			t.Fatalf("dave's login with %q after the reset: %d %v, want %d", pw, st, err, want)
		}
	}
	if _, err := runCLIErr(bin, "", "user", "passwd", "dave", "--server", p.http, "--data", data); err == nil || !strings.Contains(err.Error(), "--password-stdin is required") {
		t.Fatalf("user passwd without --password-stdin: %v", err)
	}
	// Suspends the account (its login is refused with a reason), lifts it.
	if out := runCLI(t, bin, "", "user", "suspend", "dave", "--server", p.http, "--data", data); !strings.Contains(out, "dave is suspended") {
		t.Fatalf("user suspend: %q", out)
	}
	if st, _ := httpJSON(http.MethodPost, p.http+"/auth/login", "", map[string]string{"username": "dave", "password": "remembered password"}, nil); st != http.StatusForbidden {
		t.Fatalf("dave's login while suspended: %d", st)
	}
	if out := runCLI(t, bin, "", "user", "list", "--suspended", "--server", p.http, "--data", data); !strings.Contains(out, "dave") || strings.Contains(out, "alice") {
		t.Fatalf("user list --suspended: %q", out)
	}
	if out := runCLI(t, bin, "", "user", "suspend", "dave", "--lift", "--server", p.http, "--data", data); !strings.Contains(out, "may sign in again") {
		t.Fatalf("user suspend --lift: %q", out)
	}
	if out := runCLI(t, bin, "", "user", "list", "--server", p.http, "--data", data); !strings.Contains(out, "alice") || !strings.Contains(out, "dave") || strings.Contains(out, "suspended") {
		t.Fatalf("user list: %q", out)
	}
	if st, _ := httpJSON(http.MethodPost, p.http+"/auth/login", "", map[string]string{"username": "dave", "password": "remembered password"}, nil); st != http.StatusOK {
		t.Fatalf("dave's login after the suspension: %d", st)
	}
	// And deletes the account: it cannot sign in any more.
	if _, err := runCLIErr(bin, "", "user", "delete", "dave", "--server", p.http, "--data", data); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("user delete without --yes: %v", err)
	}
	if out := runCLI(t, bin, "", "user", "delete", "dave", "--yes", "--server", p.http, "--data", data); !strings.Contains(out, "deleted dave") {
		t.Fatalf("user delete: %q", out)
	}
	if st, _ := httpJSON(http.MethodPost, p.http+"/auth/login", "", map[string]string{"username": "dave", "password": "remembered password"}, nil); st != http.StatusUnauthorized {
		t.Fatalf("dave's login after his deletion: %d", st)
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
				if err := publishNumbered(c, cid, i); err != nil {
					t.Errorf("publish %s: %v", cid, err)
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
	var bobTok string
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if c := readyz(p2.http); c != http.StatusOK {
			return fmt.Errorf("restarted node /readyz %d", c)
		}
		return nil
	})
	// The node's Badger keeps its memtables only in memory (no write-ahead
	// file; internal/badgeropts): what the kill took from it comes back
	// from the Raft log, and the node says so.
	if !strings.Contains(p2.logs.String(), "database behind the raft log") {
		t.Errorf("the restart did not apply entries again from the raft log:\n%s", p2.logs.String())
	}
	bobTok = mintToken(t, bin, data, "bob", p2)
	// Clients whose PUBACKs the kill took send again with the same cid
	// (LESSONS 2): every retry is acknowledged and none is stored a second
	// time; the dedupe holds across the crash and the log's replay.
	for _, s := range senders {
		c := dialV5(t, p2.mqtt, s+"/retry", s, tokens[s])
		for i := 0; i < perSender; i++ {
			cid := fmt.Sprintf("%s-%d", s, i)
			if err := publishNumbered(c, cid, i); err != nil {
				t.Fatalf("retry of %s after the restart: %v", cid, err)
			}
		}
	}
	for {
		req, _ := http.NewRequest("GET", p2.http+"/chat/sync?limit=1000&since="+cursor, nil)
		req.Header.Set("Authorization", "Bearer "+bobTok)
		resp, err := ratelimit.DoHTTP(nil, req, 0)
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

// publishNumbered publishes message i ("m i") to bob with cid and waits
// for a successful PUBACK.
func publishNumbered(c *paho.Client, cid string, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
		Payload: []byte(fmt.Sprintf(`{"cid":%q,"type":"text","body":"m %d"}`, cid, i))})
	if err != nil {
		return err
	}
	if pr.ReasonCode != 0 {
		return fmt.Errorf("PUBACK reason %#x", pr.ReasonCode)
	}
	return nil
}
