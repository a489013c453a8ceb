package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A group's info panel between three browsers: alice (the owner) sees
// the members with their roles, adds carol through search, makes bob an
// admin, cannot leave while she owns the group, and hands ownership to
// bob (she is an admin then, with no owner's actions); bob, the owner,
// makes alice a plain member and removes carol, whose page loses the
// group; alice's open panel follows, she leaves, and bob's open panel
// shows him alone, as the server does.
func TestGroupMembersAndRoles(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob, carol := browser(t), browser(t), browser(t)
	for user, ctx := range map[string]context.Context{"alice": alice, "bob": bob, "carol": carol} {
		register(t, ctx, n.HTTPURL, user)
	}
	member := func(uid, role string) string { return `[data-member="` + uid + `"][data-role="` + role + `"]` }

	run(t, alice, "alice creates a group with bob and opens its info",
		click(`.newgroup summary`),
		chromedp.SendKeys(chromedp.CSS(`#group-name`), "Crew"),
		chromedp.SendKeys(chromedp.CSS(`#group-members`), "bob"),
		click(`#create-group`),
		poll(`document.getElementById('conv-title').textContent === 'Crew'`),
	)
	// A group is in its members' lists before its first message.
	run(t, bob, "bob finds the new, quiet group", chromedp.WaitVisible(chromedp.CSS(`[data-conv^="g:"]`)))
	run(t, alice, "alice writes and opens the group's info",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hello crew\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
		click(`#group-info`),
		chromedp.WaitVisible(chromedp.CSS(member("alice", "owner"))),
		chromedp.WaitVisible(chromedp.CSS(member("bob", "member"))),
	)
	run(t, alice, "alice finds carol and adds her",
		chromedp.SendKeys(chromedp.CSS(`#add-member`), "car"),
		poll(`document.querySelector('#group-people option[value="carol"]') !== null`),
		chromedp.SendKeys(chromedp.CSS(`#add-member`), "ol"),
		click(`#add-member-submit`),
		chromedp.WaitVisible(chromedp.CSS(member("carol", "member"))),
	)
	if unnamed := eval[[]string](t, alice, accessibleNames); len(unnamed) != 0 {
		t.Fatalf("controls of the group panel without an accessible name: %q", unnamed)
	}
	run(t, carol, "carol sees the group", chromedp.WaitVisible(chromedp.CSS(`[data-conv^="g:"]`)))

	run(t, alice, "alice makes bob an admin, and may not leave while she owns the group",
		click(`[data-member="bob"] .make-admin`),
		chromedp.WaitVisible(chromedp.CSS(member("bob", "admin"))),
		click(`#leave-group`),
		poll(`document.querySelector('dialog.groupinfo .error').textContent.includes('make another member the owner first')`),
	)
	run(t, alice, "alice hands the group to bob",
		click(`[data-member="bob"] .transfer`),
		chromedp.WaitVisible(chromedp.CSS(member("bob", "owner"))),
		chromedp.WaitVisible(chromedp.CSS(member("alice", "admin"))),
	)
	// As an admin now, alice may remove plain members only; no role changes.
	if k := eval[int](t, alice, `document.querySelectorAll('dialog.groupinfo .make-admin, dialog.groupinfo .make-member, dialog.groupinfo .transfer, [data-member="bob"] .remove').length`); k != 0 {
		t.Fatalf("an admin's panel offers %d owner-only actions", k)
	}

	run(t, bob, "bob, the owner, makes alice a member and removes carol",
		click(`[data-conv^="g:"]`),
		click(`#group-info`),
		chromedp.WaitVisible(chromedp.CSS(member("bob", "owner"))),
		click(`[data-member="alice"] .make-member`),
		chromedp.WaitVisible(chromedp.CSS(member("alice", "member"))),
		click(`[data-member="carol"] .remove`),
		poll(`document.querySelector('[data-member="carol"]') === null`),
	)
	run(t, carol, "carol's page loses the group", poll(`document.querySelector('[data-conv^="g:"]') === null`))
	run(t, alice, "alice's panel follows bob's changes, and she leaves",
		chromedp.WaitVisible(chromedp.CSS(member("alice", "member"))),
		click(`#leave-group`),
		poll(`document.querySelector('dialog.groupinfo') === null && document.querySelector('[data-conv^="g:"]') === null`),
	)
	run(t, bob, "bob's open panel shows him alone",
		poll(`document.querySelectorAll('[data-member]').length === 1`),
		chromedp.WaitVisible(chromedp.CSS(member("bob", "owner"))),
	)
	if title := textOf(t, bob, `#group-panel-title`); !strings.Contains(title, "1 members") {
		t.Fatalf("bob's panel title: %q", title)
	}
	var gs struct {
		Groups []struct{ GroupID string }
	}
	getJSON(t, n.HTTPURL, n.Token(t, "bob"), "/user/groups", &gs)
	if len(gs.Groups) != 1 {
		t.Fatalf("bob's groups: %+v", gs)
	}
	var ms struct {
		Members []struct{ UserID, Role string }
	}
	getJSON(t, n.HTTPURL, n.Token(t, "bob"), "/user/groups/"+gs.Groups[0].GroupID+"/members", &ms)
	if len(ms.Members) != 1 || ms.Members[0].UserID != "bob" || ms.Members[0].Role != "owner" {
		t.Fatalf("the group's members on the server: %+v", ms)
	}
}

// A group the server made whose answer the network lost leaves the form
// filled in with an error; pressing Create again must not make a second
// group with the same members: the page sends the same request under
// the same Idempotency-Key, and the server answers the first group.
func TestCreatingAGroupAgainAfterALostAnswerMakesOneGroup(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice creates a group: the server makes it, its answer is lost",
		chromedp.Evaluate[chromedp.Void](`(() => {
			const f = window.fetch;
			let first = true;
			window.fetch = async (url, opts) => {
				const res = await f(url, opts);
				if (first && opts && opts.method === 'POST' && String(url).endsWith('/user/groups')) {
					first = false;
					throw new TypeError('Failed to fetch');
				}
				return res;
			};
		})()`),
		click(`.newgroup summary`),
		chromedp.SendKeys(chromedp.CSS(`#group-name`), "Crew"),
		chromedp.SendKeys(chromedp.CSS(`#group-members`), "bob"),
		click(`#create-group`),
		poll(`document.querySelector('p.error').textContent !== ''`),
	)
	run(t, alice, "she presses Create again and the group opens",
		click(`#create-group`),
		poll(`document.getElementById('conv-title').textContent === 'Crew'`),
	)
	req, _ := http.NewRequest(http.MethodGet, n.HTTPURL+"/user/groups", nil)
	req.Header.Set("Authorization", "Bearer "+n.Token(t, "bob"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var mine struct {
		Groups []struct {
			ID string `json:"groupId"`
		} `json:"groups"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&mine); err != nil || len(mine.Groups) != 1 {
		t.Fatalf("bob's groups: %+v %v, want one", mine, err)
	}
}
