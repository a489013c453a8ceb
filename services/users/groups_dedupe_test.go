package users

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

// The limits on the members one request names count distinct users, as
// protocol.md says of POST /user/groups ("deduplicated, at most 1,000"):
// a client that lists the owner among 1,000 others (a member picker that
// includes its user), or a user twice, is not refused for it.
func TestMemberListLimitsCountDistinctUsers(t *testing.T) {
	e := newEnv(t)
	names := make([]string, MaxInitialMembers)
	for i := range names {
		names[i] = fmt.Sprintf("m%04d", i)
	}
	e.users(append([]string{"owen"}, names...)...)

	body := func(k string, v []string) string {
		m := map[string]any{k: v}
		if k == "members" {
			m["name"] = "all"
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	// 1,001 entries: 1,000 members and the owner.
	r := e.do(http.MethodPost, "/user/groups", body("members", append([]string{"owen"}, names...)), "owen")
	var v viewBody
	if r.Code == http.StatusCreated {
		r.decode(t, &v)
	}
	if r.Code != http.StatusCreated || v.MemberCount != MaxInitialMembers+1 {
		t.Errorf("create with 1,000 members and the owner listed: %d %.200s, want 201 with %d members", r.Code, r.Body, MaxInitialMembers+1)
	}
	// 1,001 entries: 1,000 members, one of them twice.
	r = e.do(http.MethodPost, "/user/groups", body("members", append(names, names[0])), "owen")
	if r.Code != http.StatusCreated {
		t.Errorf("create with 1,000 members, one listed twice: %d %.200s, want 201", r.Code, r.Body)
	}
	// More than 1,000 distinct users is still refused.
	e.users("extra")
	if r := e.do(http.MethodPost, "/user/groups", body("members", append(names, "extra")), "owen"); r.Code != http.StatusBadRequest {
		t.Errorf("create with 1,001 members: %d, want 400", r.Code)
	}

	// Adding: 1,001 entries naming 1,000 users.
	g := e.createGroup("owen", "later")
	r = e.do(http.MethodPost, "/user/groups/"+g.ID+"/members", body("uids", append(names, names[0])), "owen")
	if r.Code != http.StatusOK {
		t.Errorf("add 1,000 members, one listed twice: %d %.200s, want 200", r.Code, r.Body)
	}
	if r := e.do(http.MethodPost, "/user/groups/"+g.ID+"/members", body("uids", append(names, "extra")), "owen"); r.Code != http.StatusBadRequest {
		t.Errorf("add 1,001 members: %d, want 400", r.Code)
	}
}
