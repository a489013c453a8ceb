package node_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node cut off from its cluster (the others, a quorum, go on without
// it) closes its signed-in clients' connections with DISCONNECT 0x89
// once it counts itself down (--node-down-after without a leader), and
// refuses their CONNECTs with 0x88 while it is, so that they move to a
// node that gets the log; a client that only receives was told nothing
// before and got nothing for as long as the partition lasted. Healed,
// it takes them again. n3 is reached through a proxy that is cut.
func TestANodeCutOffSendsItsClientsElsewhere(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	n1 := nodes[0]
	aliceTok := n1.NewUser(t, "alice")

	n3, proxy, logs := joinBehindProxy(t, n1)
	addr := "tcp://" + n3.MQTTAddr()
	alice := mustConnectV5(t, addr, "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")

	proxy.SetCut(true)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if reason, ok := alice.ServerDisconnect(); !ok || reason != 0x89 {
			return errors.New("alice (receiving only) is still connected to n3, cut off from its cluster")
		}
		return nil
	})
	if reason := alice.ServerDisconnectReason(); !strings.Contains(reason, "cut off from its cluster") {
		t.Errorf("DISCONNECT 0x89 from n3, cut off: reason string %q, want it to say so", reason)
	}
	c, ca, err := mqtttest.Open(addr, mqtttest.Options{ClientID: "alice/tablet", Username: "alice", Password: aliceTok})
	if err == nil {
		_ = c.Disconnect(&paho.Disconnect{})
		t.Fatal("n3, cut off, took a new connection of alice's")
	}
	if ca == nil || ca.ReasonCode != 0x88 || !strings.Contains(ca.Properties.ReasonString, "cut off") {
		t.Fatalf("CONNECT to n3 while it is cut off: %+v %v, want CONNACK 0x88 saying it is cut off", ca, err)
	}
	if !strings.Contains(logs.String(), "cut off from the cluster: closed the signed-in connections") {
		t.Errorf("n3's log does not say it closed its clients' connections:\n%s", logs.String())
	}

	proxy.SetCut(false)
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		c, ca, err := mqtttest.Open(addr, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: aliceTok})
		if err != nil {
			return fmt.Errorf("CONNECT to n3 after the heal: %+v %v", ca, err)
		}
		_ = c.Disconnect(&paho.Disconnect{})
		return nil
	})
}

// A node cut off from the others while they form a quorum without it
// sends its clients elsewhere although the down marks it applied last
// say one of them is down: those marks are as old as the last entry it
// applied, and the member they name may have come back since and formed
// a quorum with the others. Three voters: n3 goes away and is marked
// down; then n2 is cut off while n3 is back, and n1 and n3 commit
// without it (staleMarks). n2 still applied "n3 down", counted only n1
// up among the others (no quorum) and kept alice, who got nothing that
// n1 and n3 committed, for as long as the partition lasted.
func TestANodeCutOffWhileAnotherWasMarkedDownSendsItsClientsElsewhere(t *testing.T) {
	sc := startStaleMarks(t)
	aliceTok := sc.adminTok
	addr := "tcp://" + sc.n2.MQTTAddr()
	sc.n3Away(t)
	alice := mustConnectV5(t, addr, "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")

	cut := sc.cutN2(t)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if reason, ok := alice.ServerDisconnect(); !ok || reason != 0x89 {
			return errors.New("alice (receiving only) is still connected to n2, cut off while n1 and n3 commit")
		}
		return nil
	})
	// --node-down-after without a leader, then up to a tick of
	// DownAfter/4: 5 s more leaves room for a loaded machine.
	if el := time.Since(cut); el > staleMarksDownAfter+5*time.Second {
		t.Errorf("alice sent away %v after n2 was cut off, want within --node-down-after (%v) and a tick", el.Round(time.Millisecond), staleMarksDownAfter)
	} else {
		t.Logf("alice sent away %v after n2 was cut off (--node-down-after %v)", el.Round(time.Millisecond), staleMarksDownAfter)
	}
	sc.wantStale(t)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		// n1 and n3 commit without n2: n2's mark, n3's cleared.
		return wantMarkedDown(t, sc.n1, aliceTok, map[string]bool{"n2": true})
	})
	c, ca, err := mqtttest.Open(addr, mqtttest.Options{ClientID: "alice/tablet", Username: "alice", Password: aliceTok})
	if err == nil {
		_ = c.Disconnect(&paho.Disconnect{})
		t.Fatal("n2, cut off, took a new connection of alice's")
	}
	if ca == nil || ca.ReasonCode != 0x88 {
		t.Fatalf("CONNECT to n2 while it is cut off: %+v %v, want CONNACK 0x88", ca, err)
	}

	sc.intoN2.SetCut(false)
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		c, ca, err := mqtttest.Open(addr, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: aliceTok})
		if err != nil {
			return fmt.Errorf("CONNECT to n2 after the heal: %+v %v", ca, err)
		}
		_ = c.Disconnect(&paho.Disconnect{})
		return nil
	})
	if !strings.Contains(sc.n2Logs.String(), "cut off from the cluster: closed the signed-in connections") {
		t.Errorf("n2's log does not say it closed its clients' connections:\n%s", sc.n2Logs.String())
	}
}

// staleMarksDownAfter is --node-down-after in a staleMarks cluster: a
// mark is cleared after half of it (3 s), time enough for n3 to catch up
// before n2 is cut off (cutN2).
const staleMarksDownAfter = 6 * time.Second

// staleMarks is a cluster of three voters where n2 gets cut off while
// the down mark of n3 it applied last is stale: n1 (the leader), and n2
// and n3, each reached through a proxy that a test cuts. A proxy cuts
// only what comes to its node: a node cut off can still reach the others
// (its vote requests, say), so n2 is cut only once n1 leads n3 again,
// caught up: n1 never loses its quorum, and rejects n2's votes.
type staleMarks struct {
	n1             *nodetest.Node
	n2, n3         *node.Node
	onN2, onN3     *nodetest.Node // n2 and n3 for api and checks
	intoN2, intoN3 *delayproxy.Proxy
	n2Logs         *testutil.SyncBuffer
	adminTok       string // alice's, the first account
	opts           []nodetest.Option
}

func startStaleMarks(t *testing.T, opts ...nodetest.Option) *staleMarks {
	t.Helper()
	opts = append([]nodetest.Option{nodetest.WithConfig(func(c *node.Config) { c.NodeDownAfter = staleMarksDownAfter })}, opts...)
	sc := &staleMarks{opts: opts}
	sc.n1 = nodetest.StartCluster(t, 1, opts...)[0]
	sc.adminTok = sc.n1.NewUser(t, "alice")
	sc.n2, sc.intoN2, sc.n2Logs = joinBehindProxyAs(t, sc.n1, "n2", opts...)
	sc.n3, sc.intoN3, _ = joinBehindProxyAs(t, sc.n1, "n3", opts...)
	sc.onN2 = &nodetest.Node{Node: sc.n2, HTTPURL: sc.n2.HTTPURL()}
	sc.onN2.Config.NodeID = "n2"
	sc.onN3 = &nodetest.Node{Node: sc.n3, HTTPURL: sc.n3.HTTPURL()}
	sc.onN3.Config.NodeID = "n3"
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		st, err := clusterStatus(t, sc.onN2, sc.adminTok)
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Suffrage != "Voter" {
				return fmt.Errorf("%s is a %s, not a voter yet", m.Name, m.Suffrage)
			}
		}
		if len(st.Members) != 3 {
			return fmt.Errorf("members %+v, want n1, n2, n3", st.Members)
		}
		return nil
	})
	return sc
}

// n3Away cuts n3 off until n2 has applied its down mark.
func (sc *staleMarks) n3Away(t *testing.T) {
	t.Helper()
	sc.intoN3.SetCut(true)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		return wantMarkedDown(t, sc.onN2, sc.adminTok, map[string]bool{"n3": true})
	})
}

// cutN2 lets n3 back, waits until n1 leads it, caught up, with its mark
// not cleared yet, and cuts n2 off at once; it returns when. It checks
// that n2 still holds n3's mark then (wantStale tells whether it still
// does later).
func (sc *staleMarks) cutN2(t *testing.T) time.Time {
	t.Helper()
	sc.intoN3.SetCut(false)
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := clusterStatus(t, sc.n1, sc.adminTok)
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.Name == "n3" && (!m.Down || m.Lag != 0) {
				return fmt.Errorf("n3 on the leader n1: down %v, lag %d; want caught up (0), mark not yet cleared", m.Down, m.Lag)
			}
		}
		if !sc.n1.IsLeader() {
			return errors.New("n1 no longer leads")
		}
		return nil
	})
	sc.intoN2.SetCut(true)
	at := time.Now()
	sc.wantStale(t)
	return at
}

// wantStale fails unless n2 still holds n3's mark (and none of its own)
// and does not lead.
func (sc *staleMarks) wantStale(t *testing.T) {
	t.Helper()
	if err := wantMarkedDown(t, sc.onN2, sc.adminTok, map[string]bool{"n3": true}); err != nil {
		t.Fatalf("not the partition of this test: n2's own view: %v", err)
	}
	if sc.n2.IsLeader() {
		t.Fatal("not the partition of this test: n2 leads")
	}
}

// wantMarkedDown is nil once GET /cluster/status on n names exactly
// the members in down as down.
func wantMarkedDown(t *testing.T, n *nodetest.Node, adminTok string, down map[string]bool) error {
	t.Helper()
	st, err := clusterStatus(t, n, adminTok)
	if err != nil {
		return err
	}
	for _, m := range st.Members {
		if m.Down != down[m.Name] {
			return fmt.Errorf("%s: %s down %v, want %v", n.HTTPURL, m.Name, m.Down, down[m.Name])
		}
	}
	return nil
}

type clusterMembers struct {
	Members []struct {
		Name     string `json:"name"`
		Suffrage string `json:"suffrage"`
		Down     bool   `json:"down"`
		Lag      int64  `json:"lag"`
	} `json:"members"`
}

// clusterStatus is GET /cluster/status on n (an admin's token).
func clusterStatus(t *testing.T, n *nodetest.Node, adminTok string) (clusterMembers, error) {
	t.Helper()
	var st clusterMembers
	if code := api(t, n, adminTok, "GET", "/cluster/status", nil, &st); code != 200 {
		return st, fmt.Errorf("GET /cluster/status on %s: %d", n.HTTPURL, code)
	}
	return st, nil
}
