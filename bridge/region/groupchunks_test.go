package region_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A group of 5,000 members, nearly all in us (profiles only: the home
// does not check that they exist, us keeps in its mirror only users it
// has), crosses the link in chunks: us's mirror lists all of them, a message
// reaches bob, a removal follows, nothing was too large to send, and
// the chunks left nothing behind.
func TestLargeGroupAcrossRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("a 5,000-member group")
	}
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	gid := newGroupAcross(t, eu, aliceTok, []string{"bob@us"}, us, bobTok, []string{"alice@eu", "bob"})
	mirror := gid + "@eu"
	const total = 5000
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total-2; i += 8 {
				if err := us.nodes[0].Users.CreateProfile(context.Background(), fmt.Sprintf("u%04d", i), "U"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for start := 0; start < total-2; start += 1000 {
		var uids []string
		for i := start; i < min(start+1000, total-2); i++ {
			uids = append(uids, fmt.Sprintf("u%04d@us", i))
		}
		if code := call(t, eu.nodes[0], aliceTok, "POST", "/user/groups/"+gid+"/members", map[string]any{"uids": uids}, nil); code != http.StatusOK {
			t.Fatalf("add %d members: %d", len(uids), code)
		}
	}
	count := func(want int) {
		t.Helper()
		nodetest.CheckFor(t, 60e9, 50e6, func() error {
			var g struct {
				MemberCount int `json:"memberCount"`
			}
			if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror, nil, &g); code != http.StatusOK || g.MemberCount != want {
				return fmt.Errorf("%s in us: %d, %d members, want %d", mirror, code, g.MemberCount, want)
			}
			return nil
		})
	}
	count(total)
	var page struct {
		Members []struct {
			UserID string `json:"userId"`
		} `json:"members"`
	}
	if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror+"/members?limit=1000&after=u4990", nil, &page); code != http.StatusOK || len(page.Members) == 0 {
		t.Fatalf("members after u4990: %d %+v", code, page)
	}
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "group/"+mirror+"/newMessage")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	if code, _ := alice.Pub(t, "group/"+gid+"/newMessage", 1, textMsg("big", "to five thousand")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if e := nextGroup(t, bob, "group/"+mirror+"/newMessage"); e.Body != "to five thousand" || e.From != "alice@eu" {
		t.Fatalf("bob got %+v", e)
	}
	if code := call(t, eu.nodes[0], aliceTok, "DELETE", "/user/groups/"+gid+"/members/u0007@us", nil, nil); code != http.StatusNoContent {
		t.Fatalf("remove: %d", code)
	}
	count(total - 1)
	if n := counter(t, eu.nodes[0], "edgechat_region_link_sent_total", `result="too_large"`); n != 0 {
		t.Fatalf("%v entries too large for the link", n)
	}
	if n := counter(t, eu.nodes[0], "edgechat_region_link_group_sent_total", `kind="state"`); n < 2*4 {
		t.Fatalf("eu sent %v state entries: the states were not chunked", n)
	}
}
