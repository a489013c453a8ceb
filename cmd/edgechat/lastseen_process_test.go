package main

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/services/presence"
)

// A power cut of the whole cluster (SIGKILL of every node) after a user
// went offline: once the three nodes are back on their data dirs, GET
// /presence/{uid} on each answers the user's last seen. Before: last
// seen lived only in memory; every node answered a zero lastSeen.
func TestLastSeenSurvivesAPowerCutOfTheWholeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes")
	}
	c := startCluster3(t, "--heartbeat-interval", "1m", "--presence-grace", "300ms")
	tokens := c.addUsers("a long password", "alice", "bob")
	if st, err := httpJSON("POST", c.proc(0).http+"/user/me/contacts", tokens["alice"], map[string]string{"uid": "bob"}, nil); err != nil || st/100 != 2 {
		t.Fatalf("add contact: %d %v", st, err)
	}
	get := func(p *proc) (string, time.Time, error) {
		var pr struct {
			Status   string    `json:"status"`
			LastSeen time.Time `json:"lastSeen"`
		}
		st, err := httpJSON("GET", p.http+"/presence/alice", tokens["bob"], nil, &pr)
		if err == nil && st != http.StatusOK {
			err = fmt.Errorf("GET /presence/alice on %s: %d", p.http, st)
		}
		return pr.Status, pr.LastSeen, err
	}
	alice := dialV5(t, c.proc(1).mqtt, "alice/phone", "alice", tokens["alice"])
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st, _, err := get(c.proc(0)); err != nil || st != "online" {
			return fmt.Errorf("alice %q (%v) while connected", st, err)
		}
		return nil
	})
	_ = alice.Disconnect(&paho.Disconnect{})
	var seen time.Time
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, ls, err := get(c.proc(0))
		if err != nil || st != "offline" || ls.IsZero() {
			return fmt.Errorf("alice %q last seen %v (%v) after leaving", st, ls, err)
		}
		seen = ls
		return nil
	})
	// Her home has written it (committed on a quorum).
	home := int(presence.HomeAmong([]string{"n1", "n2", "n3"}, "alice")[1] - '1')
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		n, err := metricSum(c.proc(home).http, "edgechat_presence_lastseen_written_total", "")
		if err == nil && n < 1 {
			err = fmt.Errorf("n%d wrote no last seen yet", home+1)
		}
		return err
	})

	for i := range 3 {
		c.proc(i).stop(t, syscall.SIGKILL)
	}
	next := make([]*proc, 3)
	for i := range 3 {
		next[i] = startProc(t, nil, c.bin, c.args(i, c.proc(i).cluster, "")...)
	}
	for i := range 3 {
		next[i].waitServing(t, 60*time.Second)
	}
	c.mu.Lock()
	c.procs = next
	c.mu.Unlock()
	c.waitFormed(30 * time.Second)
	for i := range 3 {
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			st, ls, err := get(c.proc(i))
			if err != nil {
				return err
			}
			if st != "offline" || !ls.Equal(seen) {
				return fmt.Errorf("after the power cut n%d answers alice %q last seen %v, want offline last seen %v", i+1, st, ls, seen)
			}
			return nil
		})
	}
}
