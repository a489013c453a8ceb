package web_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A user in more groups than a page of GET /user/groups (200) gets the
// messages of all of them live: the page read only the first page, so
// the groups past it were never subscribed to, and their messages came
// only after a reload.
func TestGroupsPastTheFirstPageAreLive(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	last := ""
	for i := range 201 {
		var g struct{ GroupID string }
		body := fmt.Sprintf(`{"name":"g%03d","members":["bob"]}`, i)
		if err := json.Unmarshal(apiCall(t, "POST", n.HTTPURL+"/user/groups", aliceTok, body), &g); err != nil || g.GroupID == "" {
			t.Fatalf("group %d: %v %+v", i, err, g)
		}
		if g.GroupID > last {
			last = g.GroupID // the page past the first 200, in group-ID order
		}
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "the page has read its groups", poll(`document.querySelectorAll('[data-conv^="g:"]').length === 201`))
	run(t, alice, "alice opens the last group", click(`[data-conv="g:`+last+`"]`),
		poll(`document.querySelector('[data-conv="g:`+last+`"]').getAttribute('aria-current') === 'true'`))
	apiCall(t, "POST", n.HTTPURL+"/chat/messages", bobTok, `{"group":"`+last+`","cid":"late1","type":"text","body":"in the last group"}`)
	run(t, alice, "bob's message in the last group comes live", poll(shows("in the last group", false)))
}
