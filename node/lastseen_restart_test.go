package node_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// presenceOf is GET /presence/{uid} on n as tok, or an error (a node
// that cannot answer yet, after a restart).
func presenceOf(t *testing.T, n *nodetest.Node, tok, uid string) (status string, lastSeen time.Time, err error) {
	t.Helper()
	var p struct {
		Status   string    `json:"status"`
		LastSeen time.Time `json:"lastSeen"`
	}
	if st := api(t, n, tok, "GET", "/presence/"+uid, nil, &p); st != 200 {
		return "", time.Time{}, fmt.Errorf("GET /presence/%s on %s: %d", uid, n.Config.NodeID, st)
	}
	return p.Status, p.LastSeen, nil
}

// storedSeen is what n's replicated state keeps of uid's last seen ("" none).
func storedSeen(t *testing.T, n *nodetest.Node, uid string) string {
	t.Helper()
	for k, v := range node.DumpState(t, n.Node, "r/presence/") {
		if strings.HasSuffix(k, "/"+uid) {
			return v
		}
	}
	return ""
}

// restartAll stops every node of a cluster and starts them all again on
// the same data directories and cluster addresses (an upgrade of the
// whole cluster, a power cut), concurrently: each waits for a quorum.
func restartAll(t *testing.T, nodes []*nodetest.Node) []*nodetest.Node {
	t.Helper()
	cfgs := make([]node.Config, len(nodes))
	for i, n := range nodes {
		cfgs[i] = n.Config
		cfgs[i].ClusterAddr = n.ClusterAddr()
		cfgs[i].Join = nil
	}
	for _, n := range nodes {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	again := make([]*nodetest.Node, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Go(func() { again[i], errs[i] = nodetest.Start(cfgs[i], slog.New(slog.NewTextHandler(io.Discard, nil))) })
	}
	wg.Wait()
	for _, n := range again {
		if n != nil {
			t.Cleanup(func() { _ = n.Stop() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("restarting the cluster: %v", err)
	}
	return again
}

// A user goes offline; then the whole cluster stops and starts again
// (an upgrade, a power cut). Their contacts must still see when they
// were last seen: last seen is written to the replicated state when a
// user goes offline. Before: it lived only in the nodes' memory (and the
// brokers' retained copies, in memory too), so after the restart
// GET /presence/{uid} answered offline with a zero lastSeen.
func TestLastSeenSurvivesAWholeClusterRestart(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithPresence(time.Minute, 300*time.Millisecond))
	n1, n2 := nodes[0], nodes[1]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	if st := api(t, n1, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	dev := mustConnectV5(t, n2.MQTTURL, "alice", "phone", aliceTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st, _, err := presenceOf(t, n1, bobTok, "alice"); err != nil || st != "online" {
			return fmt.Errorf("alice is %q (%v) while connected", st, err)
		}
		return nil
	})
	_ = dev.Disconnect(&paho.Disconnect{})
	var seen time.Time
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, ls, err := presenceOf(t, n1, bobTok, "alice")
		if err != nil || st != "offline" || ls.IsZero() {
			return fmt.Errorf("alice is %q last seen %v (%v) after leaving", st, ls, err)
		}
		seen = ls
		return nil
	})
	// The record is replicated to every node (it is written in the
	// background, never in the way of the offline itself).
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if storedSeen(t, n, "alice") == "" {
				return fmt.Errorf("%s keeps no last seen of alice", n.Config.NodeID)
			}
		}
		return nil
	})

	again := restartAll(t, nodes)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, n := range again {
			st, ls, err := presenceOf(t, n, bobTok, "alice")
			if err != nil {
				return err
			}
			if st != "offline" || !ls.Equal(seen) {
				return fmt.Errorf("after a restart of the whole cluster %s answers alice %q last seen %v, want offline last seen %v",
					n.Config.NodeID, st, ls, seen)
			}
		}
		return nil
	})
	// A watcher subscribing to presence/alice on any node gets her
	// retained status with it: each node retains the stored last seen
	// of the users it has no copy of.
	for _, n := range again {
		w := mustConnectV5(t, n.MQTTURL, "bob", "phone-"+n.Config.NodeID, bobTok)
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if r := w.Sub(t, "presence/alice"); r[0] > 2 {
				return fmt.Errorf("bob may not watch alice on %s yet: %#x", n.Config.NodeID, r[0])
			}
			return nil
		})
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			msgs := w.Received("presence/alice")
			if len(msgs) == 0 {
				return fmt.Errorf("a watcher on %s got no presence of alice after the restart", n.Config.NodeID)
			}
			var p struct {
				Status   string    `json:"status"`
				LastSeen time.Time `json:"lastSeen"`
			}
			if err := json.Unmarshal(msgs[len(msgs)-1].Payload, &p); err != nil {
				return err
			}
			if p.Status != "offline" || !p.LastSeen.Equal(seen) {
				return fmt.Errorf("a watcher on %s got alice %q last seen %v, want offline last seen %v", n.Config.NodeID, p.Status, p.LastSeen, seen)
			}
			return nil
		})
	}
}

// An erased account's last seen goes with it: the replicated record, and
// what the node remembers and retains of it (GET /presence/{uid} of the
// node's own state finds nothing). Before there was no record to erase;
// once there is one it must not outlive the account.
func TestErasureRemovesTheStoredLastSeen(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithPresence(time.Minute, 300*time.Millisecond),
		nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	dev := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st, _, err := presenceOf(t, n, bobTok, "alice"); err != nil || st != "online" {
			return fmt.Errorf("alice is %q (%v) while connected", st, err)
		}
		return nil
	})
	_ = dev.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if storedSeen(t, n, "alice") == "" {
			return errors.New("no last seen of alice stored")
		}
		return nil
	})
	if st := api(t, n, aliceTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("alice")}, nil); st != 202 {
		t.Fatalf("delete: %d", st)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, n, "alice"); len(left) > 0 {
			return fmt.Errorf("keys still name alice: %v", left)
		}
		if p := n.Presence.Status("alice"); !p.LastSeen.IsZero() {
			return fmt.Errorf("the node still answers alice last seen %v", p.LastSeen)
		}
		return nil
	})
}

// Presence does not depend on the cluster committing: with two of three
// nodes down (no leader), a user homed on the node left connects, is
// shown online, leaves and is shown offline with their last seen as
// usual; the write of that last seen cannot commit, and catches up once
// the other nodes are back.
func TestPresenceWorksWithoutALeaderAndLastSeenCatchesUp(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithPresence(time.Minute, 300*time.Millisecond),
		nodetest.WithConfig(func(c *node.Config) { c.PresenceSeenEvery = 200 * time.Millisecond }))
	n1 := nodes[0]
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if h := n.Presence.Home("x"); h != n1.Presence.Home("x") {
				return fmt.Errorf("%s thinks x's home is %s", n.Config.NodeID, h)
			}
		}
		return nil
	})
	var uid string
	for i := 0; uid == ""; i++ {
		if u := fmt.Sprintf("user%d", i); n1.Presence.Home(u) == "n1" {
			uid = u
		}
	}
	tok, bobTok := n1.NewUser(t, uid), n1.NewUser(t, "bob")
	if st := api(t, n1, tok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	// The contact is on n1 before its peers go.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, _, err := presenceOf(t, n1, bobTok, uid)
		return err
	})

	cfgs := make([]node.Config, 0, 2)
	for _, n := range nodes[1:] {
		cfg := n.Config
		cfg.ClusterAddr = n.ClusterAddr()
		cfg.Join = nil
		cfgs = append(cfgs, cfg)
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n1.IsLeader() {
			return errors.New("n1 still leads alone")
		}
		return nil
	})

	dev := mustConnectV5(t, n1.MQTTURL, uid, "phone", tok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st, _, err := presenceOf(t, n1, bobTok, uid); err != nil || st != "online" {
			return fmt.Errorf("%s is %q (%v) while connected, no leader", uid, st, err)
		}
		return nil
	})
	_ = dev.Disconnect(&paho.Disconnect{})
	var seen time.Time
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, ls, err := presenceOf(t, n1, bobTok, uid)
		if err != nil || st != "offline" || ls.IsZero() {
			return fmt.Errorf("%s is %q last seen %v (%v) after leaving, no leader", uid, st, ls, err)
		}
		seen = ls
		return nil
	})
	if v := storedSeen(t, n1, uid); v != "" {
		t.Fatalf("a last seen of %s committed without a quorum: %q", uid, v)
	}

	// The others come back: the record catches up on every node.
	var wg sync.WaitGroup
	back := make([]*nodetest.Node, len(cfgs))
	errs := make([]error, len(cfgs))
	for i := range cfgs {
		wg.Go(func() { back[i], errs[i] = nodetest.Start(cfgs[i], slog.New(slog.NewTextHandler(io.Discard, nil))) })
	}
	wg.Wait()
	for _, n := range back {
		if n != nil {
			t.Cleanup(func() { _ = n.Stop() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, n := range append([]*nodetest.Node{n1}, back...) {
			if storedSeen(t, n, uid) == "" {
				return fmt.Errorf("%s keeps no last seen of %s", n.Config.NodeID, uid)
			}
		}
		if _, ls, err := presenceOf(t, n1, bobTok, uid); err != nil || !ls.Equal(seen) {
			return fmt.Errorf("%s last seen %v (%v), want %v", uid, ls, err, seen)
		}
		return nil
	})
}
