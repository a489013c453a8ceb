package web_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A user with more conversations than a page of the conversation list
// (1,000) sees the last message and the unread count of every one: the
// page read only the first page (it said hasMore and was not asked for
// more), so the conversations past it showed no message and no badge
// until new activity brought them into the first 1,000.
func TestConversationsPastTheFirstPageShowTheirMessages(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	var gids []string
	for i := range 1001 {
		var g struct{ GroupID string }
		body := fmt.Sprintf(`{"name":"g%04d","members":["bob"]}`, i)
		if err := json.Unmarshal(apiCall(t, "POST", n.HTTPURL+"/user/groups", aliceTok, body), &g); err != nil || g.GroupID == "" {
			t.Fatalf("group %d: %v %+v", i, err, g)
		}
		gids = append(gids, g.GroupID)
	}
	// The first group's message is the oldest activity: the last of the list.
	for i, gid := range gids {
		apiCall(t, "POST", n.HTTPURL+"/chat/messages", bobTok, fmt.Sprintf(`{"group":%q,"cid":"m%d","type":"text","body":"in g%04d"}`, gid, i, i))
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	first := `[data-conv="g:` + gids[0] + `"]`
	run(t, alice, "the oldest conversation shows its last message and its unread count",
		poll(`document.querySelectorAll('[data-conv^="g:"]').length === 1001`),
		poll(`(document.querySelector('`+first+` .conv-last') || {}).textContent === 'bob: in g0000' && document.querySelector('`+first+` .badge').textContent === '1'`))
}
