package web_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// The contacts panel of a user who blocked nobody shows the contacts,
// and nothing else: it showed "nullnull" under them (the blocked list's
// title and list, absent, were handed to replaceChildren as null, which
// it writes as text).
func TestTheContactsPanelShowsNoNull(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	apiCall(t, "POST", n.HTTPURL+"/user/me/contacts", n.Token(t, "alice"), `{"uid":"bob"}`)
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens her contacts",
		click(`#contacts-panel summary`),
		chromedp.WaitVisible(chromedp.CSS(`[data-contact="bob"]`)),
	)
	if got := textOf(t, alice, `#contacts-panel .contacts-list`); strings.Contains(got, "null") {
		t.Fatalf("the contacts panel shows %q", got)
	}
}
