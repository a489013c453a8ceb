package node_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// GET /presence/{uid} of a user never seen online answers no lastSeen,
// as {"status":"unknown"} of another region's user is documented: it
// answered "0001-01-01T00:00:00Z", which a client shows as "last seen
// 739,000 days ago" (JavaScript's Date.parse takes it as a time).
func TestPresenceOfAUserNeverSeenHasNoLastSeen(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	var raw json.RawMessage
	if st := api(t, n, aliceTok, "GET", "/presence/alice", nil, &raw); st != 200 {
		t.Fatalf("GET /presence/alice: %d %s", st, raw)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["lastSeen"]; ok || got["status"] != "offline" {
		t.Errorf("presence of a user never seen: %s, want {\"status\":\"offline\"} without lastSeen", raw)
	}
	// Seen once, it has one.
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var p struct{ Status, LastSeen string }
		if st := api(t, n, aliceTok, "GET", "/presence/alice", nil, &p); st != 200 || p.Status != "online" || p.LastSeen == "" {
			return fmt.Errorf("after a heartbeat: %d %+v", st, p)
		}
		return nil
	})
}
