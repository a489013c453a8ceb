package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// netLab is three network namespaces on a bridge of the root namespace,
// made for one test and removed by t.Cleanup (also on failure). Nothing
// it did not create is touched.
type netLab struct {
	t      *testing.T
	ns     []string // namespace names
	ips    []string // 10.x.0.11..13
	bridge string
}

func ipCmd(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetLab skips the test unless it runs as root with ip and iptables.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition test: needs root (network namespaces, veth, iptables); CI runs it as root")
	}
	var missing []string
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Skipf("partition test: %s not installed (apt-get install iproute2 iptables)", strings.Join(missing, " and "))
	}
	tag := fmt.Sprintf("ec%d", os.Getpid()%10000000)
	// A /24 of 10/8 that no interface or route here uses.
	routes, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	addrs, _ := exec.Command("ip", "-4", "addr").Output()
	var subnet string
	for range 50 {
		cand := fmt.Sprintf("10.%d.%d.", 100+rand.IntN(150), rand.IntN(256))
		if !strings.Contains(string(routes), cand) && !strings.Contains(string(addrs), cand) {
			subnet = cand
			break
		}
	}
	if subnet == "" {
		t.Skip("partition test: no free 10.x.y.0/24 here")
	}
	l := &netLab{t: t, bridge: tag + "br"}
	if err := ipCmd("ip", "link", "add", l.bridge, "type", "bridge"); err != nil {
		t.Skipf("partition test: cannot create a bridge here: %v", err)
	}
	t.Cleanup(func() { _ = ipCmd("ip", "link", "del", l.bridge) })
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("ip", "addr", "add", subnet+"1/24", "dev", l.bridge)
	must("ip", "link", "set", l.bridge, "up")
	for i := 1; i <= 3; i++ {
		ns, host, peer := fmt.Sprintf("%sn%d", tag, i), fmt.Sprintf("%sv%d", tag, i), fmt.Sprintf("%sp%d", tag, i)
		ip := fmt.Sprintf("%s1%d", subnet, i)
		must("ip", "netns", "add", ns)
		// Deleting the namespace deletes the veth pair and the iptables
		// rules in it; the host end is removed too in case the move failed.
		t.Cleanup(func() {
			_ = ipCmd("ip", "netns", "del", ns)
			_ = ipCmd("ip", "link", "del", host)
		})
		must("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
		must("ip", "link", "set", peer, "netns", ns)
		must("ip", "link", "set", host, "master", l.bridge)
		must("ip", "link", "set", host, "up")
		must("ip", "-n", ns, "addr", "add", ip+"/24", "dev", peer)
		must("ip", "-n", ns, "link", "set", peer, "up")
		must("ip", "-n", ns, "link", "set", "lo", "up")
		l.ns = append(l.ns, ns)
		l.ips = append(l.ips, ip)
	}
	return l
}

// isolationRules cut node i off from the others on the cluster port, in
// both directions, inside i's namespace; its MQTT and HTTP ports stay
// reachable from the root namespace (the bridge address).
func (l *netLab) isolationRules(i int) [][]string {
	var rules [][]string
	for j, peer := range l.ips {
		if j == i {
			continue
		}
		for _, port := range []string{"--dport", "--sport"} {
			rules = append(rules,
				[]string{"INPUT", "-s", peer, "-p", "tcp", port, "7946", "-j", "DROP"},
				[]string{"OUTPUT", "-d", peer, "-p", "tcp", port, "7946", "-j", "DROP"})
		}
	}
	return rules
}

func (l *netLab) iptables(i int, op string) {
	l.t.Helper()
	for _, r := range l.isolationRules(i) {
		args := append([]string{"ip", "netns", "exec", l.ns[i], "iptables", op, r[0]}, r[1:]...)
		if err := ipCmd(args...); err != nil {
			l.t.Fatal(err)
		}
	}
}

// TestPartitionedMinorityRefusesDurableWrites runs three nodes in their
// own network namespaces, cuts n3 off from n1 and n2 on the cluster port
// and checks that n3 never acknowledges a durable publish it cannot
// commit, that n1 and n2 go on committing, and that n3 converges once the
// partition heals, with one leader.
func TestPartitionedMinorityRefusesDurableWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes in network namespaces")
	}
	lab := newNetLab(t)
	bin := edgechatBinary(t)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	procs := make([]*proc, 3)
	for i := range 3 {
		ip := lab.ips[i]
		args := []string{"--data", dirs[i], "--node-id", fmt.Sprintf("n%d", i+1),
			"--http-addr", ip + ":8080", "--mqtt-addr", ip + ":1883", "--cluster-addr", ip + ":7946", "--mqtt-publish-rate", "off"}
		if i > 0 {
			args = append(args, "--join", lab.ips[0]+":7946")
		}
		procs[i] = startProc(t, []string{"ip", "netns", "exec", lab.ns[i]}, bin, args...)
		procs[i].waitServing(t, 60*time.Second)
	}
	status := func(i int) (nodeView, error) { return clusterStatus(bin, procs[i].http, dirs[0]) }
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for i := range 3 {
			v, err := status(i)
			if err != nil {
				return err
			}
			if v.Leader == "" || v.Leader == "n3" || strings.Count(v.Raw, "\n") < 4 {
				return fmt.Errorf("n%d: not formed yet (or n3 leads):\n%s", i+1, v.Raw)
			}
		}
		return nil
	})
	for _, u := range []string{"snd1", "snd2", "snd3", "sink"} {
		runCLI(t, bin, "a long password\n", "user", "add", u, "--password-stdin", "--server", procs[0].http)
	}
	token := func(u string) string { return mintToken(t, bin, dirs[0], u, procs...) }
	sinkTok := token("sink")
	c3 := dialV5(t, procs[2].mqtt, "snd3/phone", "snd3", token("snd3"))
	defer c3.Disconnect(&paho.Disconnect{})
	publish := func(c *paho.Client, cid string, within time.Duration) (*paho.PublishResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		return c.Publish(ctx, &paho.Publish{Topic: "user/sink/newMessage", QoS: 1,
			Payload: []byte(fmt.Sprintf(`{"cid":%q,"type":"text","body":"0"}`, cid))})
	}
	if pr, err := publish(c3, "before", 10*time.Second); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish on n3 before the partition: %v %+v", err, pr)
	}
	// sink only receives, on n3.
	sink := mqtttest.MustDial(t, procs[2].mqtt, v5Options("sink/phone", "sink", sinkTok))
	if _, err := sink.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "user/sink/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	// Load on n1 and n2 for the whole partition.
	addrs := func(pref int) []string { return []string{procs[pref].mqtt} }
	tokens := map[string]string{"snd1": token("snd1"), "snd2": token("snd2")}
	l := startLoad(tokens, []string{"snd1", "snd2"}, "sink", addrs)
	var finishOnce sync.Once
	finish := func() { finishOnce.Do(l.finish) }
	defer finish()
	l.waitProgress(t, 20, 20*time.Second)

	lab.iptables(2, "-A")
	partitioned := time.Now()
	healed := false
	defer func() {
		if !healed {
			lab.iptables(2, "-D")
		}
	}()
	t.Logf("n3 cut off from n1 and n2 on port 7946")

	// n3 must never acknowledge a durable publish now.
	t0 := time.Now()
	switch pr, err := publish(c3, "minority", 15*time.Second); {
	case pr != nil && pr.ReasonCode == 0:
		t.Fatalf("n3 acknowledged a publish while cut off from the majority")
	case pr != nil:
		t.Logf("durable publish on the cut-off n3: refused %#x %q after %v", pr.ReasonCode, pr.Properties.ReasonString, time.Since(t0).Round(time.Millisecond))
		if pr.ReasonCode != 0x83 {
			t.Errorf("n3 refused it with %#x, want 0x83", pr.ReasonCode)
		}
	default:
		t.Logf("durable publish on the cut-off n3: no PUBACK (%v) after %v", err, time.Since(t0).Round(time.Millisecond))
	}
	// Once it counts itself down (--node-down-after without a leader) it
	// closes its clients' connections, the one that only receives
	// included, so that they move to a node that gets the log, and
	// refuses them until it hears a leader again.
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if reason, ok := sink.ServerDisconnect(); !ok || reason != 0x89 {
			return fmt.Errorf("sink (receiving only) is still connected to the cut-off n3")
		}
		if c3Alive(c3) {
			return fmt.Errorf("snd3 is still connected to the cut-off n3")
		}
		return nil
	})
	t.Logf("n3 closed its clients' connections %v after the partition", time.Since(partitioned).Round(time.Millisecond))
	if c, err := dialV5Err(procs[2].mqtt, "snd3/again", "snd3", token("snd3")); err == nil {
		_ = c.Disconnect(&paho.Disconnect{})
		t.Fatal("n3 took a new connection while cut off")
	} else if !strings.Contains(err.Error(), "cut off from its cluster") {
		t.Errorf("CONNECT to the cut-off n3: %v, want refused as cut off (0x88)", err)
	}

	// What the cut-off node says of itself (reported, not asserted beyond
	// not claiming a leader the majority does not have).
	v3, err3 := status(2)
	t.Logf("during the partition: n3 /readyz %d, n1 /readyz %d; n3 status: %+v %v", readyz(procs[2].http), readyz(procs[0].http), v3.State+" leader="+v3.Leader, err3)
	v1, err := status(0)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := status(1)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Leader == "" || v1.Leader != v2.Leader || v1.Leader == "n3" {
		t.Fatalf("majority side: n1 says leader %q, n2 says %q", v1.Leader, v2.Leader)
	}
	if err3 == nil && v3.State == "Leader" {
		t.Fatalf("split brain: n3 calls itself the leader while %s leads the majority", v1.Leader)
	}
	// Readiness follows quorum: the cut-off node turns unready (load
	// balancers stop sending it clients), the majority stays ready.
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if c := readyz(procs[2].http); c != http.StatusServiceUnavailable {
			return fmt.Errorf("n3 /readyz %d during the partition, want 503", c)
		}
		return nil
	})
	if c := readyz(procs[0].http); c != http.StatusOK {
		t.Fatalf("n1 /readyz %d during the partition, want 200", c)
	}
	before, _, _, _ := l.senders[0].snapshot()
	l.waitProgress(t, 20, 20*time.Second) // the majority keeps committing
	finish()
	after, _, _, _ := l.senders[0].snapshot()
	for _, s := range l.senders {
		a, r, f, _ := s.snapshot()
		t.Logf("%s (on the majority): %d acknowledged, %d refused, %d unanswered", s.name, a, r, f)
	}
	t.Logf("partition lasted %v; snd1 acknowledged %d messages during the last part of it", time.Since(partitioned).Round(time.Millisecond), after-before)

	lab.iptables(2, "-D")
	healed = true
	healedAt := time.Now()
	conv := verifyAcked(t, procs[2].http, sinkTok, l.senders, 60*time.Second)
	t.Logf("n3 held every message acknowledged on n1/n2 %v after the heal", conv.Round(time.Millisecond))
	for i := range 2 {
		verifyAcked(t, procs[i].http, sinkTok, l.senders, 30*time.Second)
	}
	// One leader, named by all three; and n3 commits again.
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		lead := ""
		for i := range 3 {
			v, err := status(i)
			if err != nil {
				return err
			}
			if v.Leader == "" || (lead != "" && v.Leader != lead) || (v.State == "Leader" && v.Node != v.Leader) {
				return fmt.Errorf("n%d: state %s, leader %q (others: %q)", i+1, v.State, v.Leader, lead)
			}
			lead = v.Leader
		}
		return nil
	})
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		c3e, err := dialV5Err(procs[2].mqtt, "snd3/healed", "snd3", token("snd3"))
		if err != nil {
			return fmt.Errorf("connect to n3 after the heal: %v", err)
		}
		defer c3e.Disconnect(&paho.Disconnect{})
		pr, err := publish(c3e, fmt.Sprintf("healed-%d", time.Now().UnixNano()), 10*time.Second)
		if err != nil || pr.ReasonCode != 0 {
			return fmt.Errorf("publish on n3 after the heal: %v %+v", err, pr)
		}
		return nil
	})
	t.Logf("n3 committed again %v after the heal", time.Since(healedAt).Round(time.Millisecond))
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if c := readyz(procs[2].http); c != http.StatusOK {
			return fmt.Errorf("n3 /readyz %d after the heal, want 200", c)
		}
		return nil
	})
}

func c3Alive(c *paho.Client) bool {
	select {
	case <-c.Done():
		return false
	default:
		return true
	}
}
