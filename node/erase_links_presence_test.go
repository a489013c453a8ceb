package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

// alice@eu watched bob@us's presence (they are contacts and wrote each
// other) when bob deleted his account: us erased him and told eu, which
// erased his stored last seen and forgot its retained presence/bob@us on
// every node. Then alice went offline, so that nobody in eu watched him
// any more, and eu's region link, which stops following his presence
// then, retained presence/bob@us again as "unknown" with the last seen
// it had received from us before the erasure: eu kept, on every node's
// broker (restored from the others' copies after a restart), the last
// seen of the user it had just erased. (A link that goes down does the
// same for the users still watched.) Likewise each node's cache of
// remote profiles kept bob's profile, which it serves, however old,
// while the link is down (GET /user/bob@us answers his tombstone
// first, but the copy stayed in memory).
func TestErasedRemoteUsersLastSeenIsNotRetainedAgain(t *testing.T) {
	c := startCrossRegion(t)
	c.alice.MustSub(t, "presence/bob@us")
	var seen time.Time
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, m := range c.alice.Received("presence/bob@us") {
			var p struct {
				Status   string    `json:"status"`
				LastSeen time.Time `json:"lastSeen"`
			}
			if json.Unmarshal(m.Payload, &p) == nil && p.Status == "online" && !p.LastSeen.IsZero() {
				seen = p.LastSeen
				return nil
			}
		}
		return errors.New("alice has not seen bob@us online yet")
	})
	c.deleteBob(t)
	c.erasedInEU(t)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if p, ok := c.eu.Broker.Retained("presence/bob@us"); ok {
			return fmt.Errorf("eu still retains presence/bob@us after his erasure: %s", p)
		}
		return nil
	})
	_ = c.alice.Conn.Close() // nobody in eu watches bob@us any more
	var retained []byte
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		p, ok := c.eu.Broker.Retained("presence/bob@us")
		if !ok {
			return errors.New("eu's link has not stopped following bob@us yet")
		}
		retained = p
		return nil
	})
	var p struct {
		Status   string    `json:"status"`
		LastSeen time.Time `json:"lastSeen"`
	}
	if err := json.Unmarshal(retained, &p); err != nil || !p.LastSeen.IsZero() {
		t.Errorf("eu retains presence/bob@us %s after erasing him (his last seen was %s)", retained, seen.Format(time.RFC3339))
	}
	// eu's link to us goes down: a cached copy would now be served.
	c.intoUS.SetCut(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if prof, err := c.eu.Region.RemoteProfile(ctx, "bob@us"); err == nil {
		t.Fatalf("eu's cache of remote profiles still holds the erased bob@us: %s", prof)
	}
}
