package web_test

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// "Create group" with no name says the group needs one: it did nothing
// at all, and the user was left to guess why no group came.
func TestAGroupWithoutANameSaysSo(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice asks for a group with members and no name",
		click(`.newgroup summary`),
		chromedp.SendKeys(chromedp.CSS(`#group-members`), "bob"),
		click(`#create-group`),
		poll(`/name/i.test(document.querySelector('.error').textContent)`))
	if got := eval[string](t, alice, `document.activeElement.id`); got != "group-name" {
		t.Errorf("the focus is on %q, want the group name", got)
	}
	run(t, alice, "she names it and it is made",
		chromedp.SendKeys(chromedp.CSS(`#group-name`), "Team"),
		click(`#create-group`),
		poll(`document.getElementById('conv-title').textContent === 'Team' && document.querySelector('.error').textContent === ''`))
}
