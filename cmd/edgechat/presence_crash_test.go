package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/services/presence"
)

// A node crashes (SIGKILL: its clients' Disconnected never leave it)
// with a user's only connection on it, and the operator removes it from
// the cluster: the user's home, another node, ends the connections of
// the removed node, and the user goes offline after the grace. Before:
// the home kept counting the dead node's connection, so the user stayed
// online until five heartbeat intervals passed, and each later
// disconnect of the user was as late.
func TestPresenceOfflineAfterACrashedNodeIsRemoved(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes")
	}
	c := startCluster3(t, "--heartbeat-interval", "1m", "--presence-grace", "300ms")
	tokens, last := onlineOnN3(t, c, "root")

	c.proc(2).stop(t, syscall.SIGKILL)
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		st, err := httpJSON("DELETE", c.proc(0).http+"/cluster/nodes/n3", tokens["root"], nil, nil)
		if err != nil || st != http.StatusOK && st != http.StatusNoContent {
			return fmt.Errorf("removal: %d %v", st, err)
		}
		return nil
	})
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if s := last(); s != "offline" {
			return fmt.Errorf("watcher's last status %q after the crashed node of the only connection was removed", s)
		}
		return nil
	})
}

// A node crashes with a user's only connection on it and comes back
// (SIGKILL, restart): the user's home, another node, ends the
// connections of the node's earlier run once it hears from the new one,
// and the user goes offline after the grace. Before: the home counted
// the dead connection for good (until five heartbeat intervals passed).
func TestPresenceOfflineAfterACrashedNodeRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes")
	}
	c := startCluster3(t, "--heartbeat-interval", "1m", "--presence-grace", "300ms")
	_, last := onlineOnN3(t, c)

	c.restart(2, syscall.SIGKILL)
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if s := last(); s != "offline" {
			return fmt.Errorf("watcher's last status %q after the node of the only connection crashed and came back", s)
		}
		return nil
	})
}

// onlineOnN3 signs up a user homed on n1 or n2 (the rendezvous hash of
// services/presence), a watcher connected to n1 who may see them, and
// the extra users named; the user connects to n3 and the watcher sees
// them online. last is the watcher's latest status of the user.
func onlineOnN3(t *testing.T, c *testCluster, extra ...string) (tokens map[string]string, last func() string) {
	t.Helper()
	uid := ""
	for i := 0; uid == ""; i++ {
		u := fmt.Sprintf("user%d", i)
		if presence.HomeAmong([]string{"n1", "n2", "n3"}, u) != "n3" {
			uid = u
		}
	}
	tokens = c.addUsers("a long password", append(extra, uid, "watcher")...)
	if st, err := httpJSON("POST", c.proc(0).http+"/user/me/contacts", tokens[uid], map[string]string{"uid": "watcher"}, nil); err != nil || st/100 != 2 {
		t.Fatalf("add contact: %d %v", st, err)
	}
	watcher := mqtttest.MustDial(t, c.proc(0).mqtt, v5Options("watcher/phone", "watcher", tokens["watcher"]))
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := watcher.Sub(t, "presence/"+uid); r[0] > 2 {
			return fmt.Errorf("watcher may not watch %s yet: %#x", uid, r[0])
		}
		return nil
	})
	last = func() string {
		got := watcher.Received("presence/" + uid)
		if len(got) == 0 {
			return ""
		}
		var p struct{ Status string }
		_ = json.Unmarshal(got[len(got)-1].Payload, &p)
		return p.Status
	}
	mqtttest.MustDial(t, c.proc(2).mqtt, v5Options(uid+"/phone", uid, tokens[uid]))
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s := last(); s != "online" {
			return fmt.Errorf("watcher's last status %q", s)
		}
		return nil
	})
	return tokens, last
}
