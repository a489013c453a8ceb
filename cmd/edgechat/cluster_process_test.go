package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestClusterSurvivesLeaderSIGKILL runs three `edgechat serve` processes,
// keeps durable messages flowing from clients on every node, kills the
// leader with SIGKILL mid-load and restarts it later. Every PUBACKed
// message must be in history on every node exactly once, in per-sender
// order.
func TestClusterSurvivesLeaderSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes")
	}
	bin := edgechatBinary(t)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	args := func(i int, clusterAddr string, join string) []string {
		a := []string{"--data", dirs[i], "--node-id", fmt.Sprintf("n%d", i+1), "--http-addr", "127.0.0.1:0",
			"--mqtt-addr", "127.0.0.1:0", "--cluster-addr", clusterAddr, "--mqtt-publish-rate", "off"}
		if join != "" {
			a = append(a, "--join", join)
		}
		return a
	}
	procs := make([]*proc, 3)
	procs[0] = startServe(t, bin, args(0, "127.0.0.1:0", "")...)
	for i := 1; i < 3; i++ {
		procs[i] = startServe(t, bin, args(i, "127.0.0.1:0", procs[0].cluster)...)
	}
	for _, u := range []string{"root", "snd1", "snd2", "snd3", "sink"} {
		runCLI(t, bin, "a long password\n", "user", "add", u, "--password-stdin", "--server", procs[0].http)
	}
	token := func(u string) string { return mintToken(t, bin, dirs[0], u, procs...) }
	leader := func(p *proc) string {
		out := runCLI(t, bin, "", "cluster", "status", "--server", p.http, "--data", dirs[0])
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 4 && f[3] == "true" {
				return f[0]
			}
		}
		return ""
	}
	var lead string
	deadline := time.Now().Add(20 * time.Second)
	for lead == "" && time.Now().Before(deadline) {
		lead = leader(procs[0])
	}
	if lead == "" {
		t.Fatal("no leader")
	}
	li := int(lead[1] - '1')

	// One sender per node, publishing until told to stop.
	type sent struct {
		mu    sync.Mutex
		acked []int
	}
	results := make([]*sent, 3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var killedAt time.Time
	var firstAfterKill sync.Once
	var failover time.Duration
	var kmu sync.Mutex
	for i := 0; i < 3; i++ {
		results[i] = &sent{}
		name := fmt.Sprintf("snd%d", i+1)
		c := dialV5(t, procs[i].mqtt, name+"/load", name, token(name))
		wg.Add(1)
		go func(i int, c *paho.Client, r *sent) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				started := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				pr, err := c.Publish(ctx, &paho.Publish{Topic: "user/sink/newMessage", QoS: 1,
					Payload: []byte(fmt.Sprintf(`{"cid":"s%d-%d","type":"text","body":"%d"}`, i+1, k, k))})
				cancel()
				if pr != nil && pr.ReasonCode != 0 {
					continue // refused (not committed during the election): not acknowledged
				}
				if err != nil {
					return // this sender's node died
				}
				r.mu.Lock()
				r.acked = append(r.acked, k)
				r.mu.Unlock()
				kmu.Lock()
				// Failover: the first write started after the kill and acknowledged.
				if !killedAt.IsZero() && started.After(killedAt) && i != li {
					firstAfterKill.Do(func() { failover = time.Since(killedAt) })
				}
				kmu.Unlock()
			}
		}(i, c, results[i])
	}
	time.Sleep(1500 * time.Millisecond) // load before the kill
	kmu.Lock()
	killedAt = time.Now()
	kmu.Unlock()
	procs[li].stop(t, syscall.SIGKILL)
	before := make([]int, 3)
	for i, r := range results {
		r.mu.Lock()
		before[i] = len(r.acked)
		r.mu.Unlock()
	}
	time.Sleep(6 * time.Second) // load during and after the election
	close(stop)
	wg.Wait()
	for i, r := range results {
		t.Logf("sender %d: %d acknowledged before the kill, %d after", i+1, before[i], len(r.acked)-before[i])
	}
	t.Logf("leader %s killed; the first write started after the kill was acknowledged %v after it", lead, failover)
	if failover == 0 {
		t.Fatal("no write was acknowledged after the leader died")
	}

	// Restart the killed node on its data dir and cluster address.
	procs[li] = startServe(t, bin, args(li, procs[li].cluster, "")...)
	bobTok := token("sink")
	for _, p := range procs {
		var got map[string]int
		var order map[string][]int
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, order = syncAll(t, p.http, bobTok)
			complete := true
			for i, r := range results {
				for _, k := range r.acked {
					if got[fmt.Sprintf("s%d-%d", i+1, k)] != 1 {
						complete = false
					}
				}
			}
			if complete || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		total := 0
		for i, r := range results {
			total += len(r.acked)
			for _, k := range r.acked {
				if n := got[fmt.Sprintf("s%d-%d", i+1, k)]; n != 1 {
					t.Fatalf("%s: acknowledged s%d-%d found %d times", p.http, i+1, k, n)
				}
			}
		}
		for cid, n := range got {
			if n > 1 {
				t.Fatalf("%s: %s stored %d times", p.http, cid, n)
			}
		}
		for s, seq := range order {
			for j := 1; j < len(seq); j++ {
				if seq[j] <= seq[j-1] {
					t.Fatalf("%s: sender %s out of order: %d after %d", p.http, s, seq[j], seq[j-1])
				}
			}
		}
		t.Logf("%s: all %d acknowledged messages present once, in per-sender order", p.http, total)
	}
}
