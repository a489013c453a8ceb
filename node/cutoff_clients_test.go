package node_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
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
// down; then n2 is cut off while n3 comes back, and n1 and n3 commit
// without it. n2 still applied "n3 down", counted only n1 up among the
// others (no quorum) and kept alice, who got nothing that n1 and n3
// committed, for as long as the partition lasted.
func TestANodeCutOffWhileAnotherWasMarkedDownSendsItsClientsElsewhere(t *testing.T) {
	n1 := nodetest.StartCluster(t, 1)[0]
	aliceTok := n1.NewUser(t, "alice") // the first account: an admin (GET /cluster/status)
	n2, intoN2, n2Logs := joinBehindProxyAs(t, n1, "n2")
	_, intoN3, _ := joinBehindProxyAs(t, n1, "n3")
	onN2 := &nodetest.Node{Node: n2, HTTPURL: n2.HTTPURL()}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		st, err := clusterStatus(t, onN2, aliceTok)
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

	intoN3.SetCut(true)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		return wantMarkedDown(t, onN2, aliceTok, map[string]bool{"n3": true})
	})
	addr := "tcp://" + n2.MQTTAddr()
	alice := mustConnectV5(t, addr, "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")

	intoN2.SetCut(true)
	intoN3.SetCut(false)
	cut := time.Now()
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if reason, ok := alice.ServerDisconnect(); !ok || reason != 0x89 {
			return errors.New("alice (receiving only) is still connected to n2, cut off while n1 and n3 commit")
		}
		return nil
	})
	// --node-down-after (3 s) without a leader, then up to a tick of
	// DownAfter/4: a bound of 10 s leaves room for a loaded machine.
	if el := time.Since(cut); el > 10*time.Second {
		t.Errorf("alice sent away %v after n2 was cut off, want within --node-down-after (3s) and a tick", el.Round(time.Millisecond))
	} else {
		t.Logf("alice sent away %v after n2 was cut off", el.Round(time.Millisecond))
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		// n1 and n3 commit without n2: n2's mark, n3's cleared.
		return wantMarkedDown(t, n1, aliceTok, map[string]bool{"n2": true})
	})
	c, ca, err := mqtttest.Open(addr, mqtttest.Options{ClientID: "alice/tablet", Username: "alice", Password: aliceTok})
	if err == nil {
		_ = c.Disconnect(&paho.Disconnect{})
		t.Fatal("n2, cut off, took a new connection of alice's")
	}
	if ca == nil || ca.ReasonCode != 0x88 {
		t.Fatalf("CONNECT to n2 while it is cut off: %+v %v, want CONNACK 0x88", ca, err)
	}

	intoN2.SetCut(false)
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		c, ca, err := mqtttest.Open(addr, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: aliceTok})
		if err != nil {
			return fmt.Errorf("CONNECT to n2 after the heal: %+v %v", ca, err)
		}
		_ = c.Disconnect(&paho.Disconnect{})
		return nil
	})
	if !strings.Contains(n2Logs.String(), "cut off from the cluster: closed the signed-in connections") {
		t.Errorf("n2's log does not say it closed its clients' connections:\n%s", n2Logs.String())
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
