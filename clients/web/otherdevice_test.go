package web_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A conversation read on another device of the user (her phone) stops
// counting unread in the browser at once: its badge and title follow the
// server's count after the read (the conversation.read event). Before,
// the page kept counting what the phone had read until it read the
// conversation list again (a reconnect, a reload).
func TestAConversationReadOnThePhoneIsReadInTheBrowser(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	var ids []string
	for i := range 2 {
		var m struct{ ID string }
		b := apiCall(t, "POST", n.HTTPURL+"/chat/messages", bobTok, fmt.Sprintf(`{"to":"alice","cid":"p%d","type":"text","body":"m%d"}`, i, i))
		if err := json.Unmarshal(b, &m); err != nil || m.ID == "" {
			t.Fatalf("POST /chat/messages: %s %v", b, err)
		}
		ids = append(ids, m.ID)
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	const badge = `(document.querySelector('[data-conv="d:bob"] .badge') || {textContent: ''}).textContent + ' ' + document.title`
	run(t, alice, "the browser counts bob's two messages unread", poll(badge+` === '2 (2) edgechat'`))
	apiCall(t, "POST", n.HTTPURL+"/chat/read", aliceTok, `{"with":"bob","upTo":"`+ids[0]+`"}`)
	run(t, alice, "alice reads the first on her phone: one left", poll(badge+` === '1 (1) edgechat'`))
	apiCall(t, "POST", n.HTTPURL+"/chat/read", aliceTok, `{"with":"bob","upTo":"`+ids[1]+`"}`)
	run(t, alice, "and the second: none", poll(badge+` === ' edgechat'`))
}
