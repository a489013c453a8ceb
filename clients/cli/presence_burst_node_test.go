package cli

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The terminal client's start does not spend the user's read budget (the
// per-user `read` class, 20/s burst 40, shared by all the user's
// devices): it asked GET /presence/{uid} of every conversation at once
// as its list came, which a user with more conversations than the burst
// answered with 429s, and for the next moments the user's other devices
// (a web page loading a chat, a phone catching up) were refused too.
// The presence of each peer comes anyway with the retained presence
// message of its subscription; only the open chat asks for it.
func TestTheStartLeavesTheUsersReadBudgetToTheirOtherDevices(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.NoRateLimits = false
		c.HTTPRate = map[string]string{"all": "off", "auth": "off", "write": "off"} // read keeps its default
	}))
	annTok := n.NewUser(t, "ann")
	const peers = 60
	for i := range peers {
		name := fmt.Sprintf("peer%02d", i)
		tok := n.NewUser(t, name)
		postJSON(t, n.HTTPURL+"/chat/messages", tok, map[string]any{"to": "ann", "cid": "c-" + name, "type": "text", "body": "hi from " + name}, nil)
	}
	// ann's other device: a token of its own session, reading as a page
	// would while the terminal client starts.
	otherDevice := n.Token(t, "ann")
	term := startTerminal(t, Config{Server: n.HTTPURL, Token: annTok})
	term.waitShown("peer")
	refused := 0
	for range 20 {
		req, _ := http.NewRequest(http.MethodGet, n.HTTPURL+"/chat/history?with=peer00&limit=1", nil)
		req.Header.Set("Authorization", "Bearer "+otherDevice)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			refused++
		}
		time.Sleep(25 * time.Millisecond)
	}
	if refused > 0 {
		t.Fatalf("ann's other device had %d of 20 reads refused 429 (20 in 0.5 s, within the read class's 20/s burst 40) while the terminal client started", refused)
	}
}
