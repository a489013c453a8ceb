package users

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

type viewBody struct {
	Group
	Role    Role          `json:"role"`
	Members []GroupMember `json:"members"`
}

func (e *env) createGroup(owner, name string, members ...string) viewBody {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"name": name, "members": members})
	r := e.do(http.MethodPost, "/user/groups", string(b), owner)
	if r.Code != http.StatusCreated {
		e.t.Fatalf("create group: %d %s", r.Code, r.Body)
	}
	var v viewBody
	r.decode(e.t, &v)
	return v
}

// removals records OnMemberRemoved calls.
type removals struct {
	mu  sync.Mutex
	got []string
}

func (r *removals) add(gid, uid string) {
	r.mu.Lock()
	r.got = append(r.got, gid+"/"+uid)
	r.mu.Unlock()
}

func (r *removals) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// eventTypes lists the types of uid's events.
func (e *env) eventTypes(uid string) []string {
	var out []string
	for _, ev := range e.pub.events(uid) {
		out = append(out, ev.Type)
	}
	return out
}

func TestGroupCreate(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "adam", "mia", "max", "nora")
	v := e.createGroup("owen", "  Team  ", "adam", "mia", "max", "mia", "owen")
	if wire.ValidGroupID(v.ID) != nil || len(v.ID) != 16 || v.Name != "Team" || v.Owner != "owen" ||
		v.Role != RoleOwner || v.MemberCount != 4 || !v.CreatedAt.Equal(e.clock.Now()) {
		t.Fatalf("created: %+v", v)
	}
	want := []GroupMember{{"adam", RoleMember}, {"max", RoleMember}, {"mia", RoleMember}, {"owen", RoleOwner}}
	if !slices.Equal(v.Members, want) {
		t.Fatalf("members: %+v", v.Members)
	}
	for _, u := range []string{"owen", "adam", "mia", "max"} {
		if got := e.eventTypes(u); !slices.Equal(got, []string{EventGroupCreated}) {
			t.Errorf("%s events: %v", u, got)
		}
		if r, ok := e.svc.Role(v.ID, u); !ok || r != map[bool]Role{true: RoleOwner, false: RoleMember}[u == "owen"] {
			t.Errorf("Role(%s) = %s %v", u, r, ok)
		}
	}
	if len(e.pub.events("nora")) != 0 {
		t.Fatal("non-member got an event")
	}
	if gs, _ := e.svc.GroupsOf("mia"); !slices.Equal(gs, []string{v.ID}) {
		t.Fatalf("GroupsOf: %v", gs)
	}
	if !e.svc.SharesGroup("mia", "owen") || e.svc.SharesGroup("mia", "nora") {
		t.Fatal("SharesGroup")
	}
	if n, m, err := e.svc.Counts(); n != 1 || m != 0 || err != nil {
		t.Fatalf("Counts: %d %d %v", n, m, err)
	}

	before := e.state()
	many := make([]string, MaxInitialMembers+1)
	for i := range many {
		many[i] = fmt.Sprintf("u%04d", i)
	}
	manyJSON, _ := json.Marshal(many)
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"name":"X","members":["ghost","mia","zz"]}`, 400, CodeUnknownUsers},
		{`{"name":"","members":[]}`, 400, CodeInvalidGroupName},
		{`{"name":"` + strings.Repeat("n", 65) + `"}`, 400, CodeInvalidGroupName},
		{`{"name":"X","avatar":"ftp://x/y"}`, 400, CodeInvalidAvatar},
		{`{"name":"X","avatar":"/relative.png"}`, 400, CodeInvalidAvatar},
		{`{"name":"X","description":"` + strings.Repeat("d", 501) + `"}`, 400, CodeInvalidDescription},
		{`{"name":"X","owner":"mia"}`, 400, "unknown_field"},
		{`{"name":"X","members":"mia"}`, 400, "validation_failed"},
		{`{"name":"X","members":` + string(manyJSON) + `}`, 400, "validation_failed"},
		{`{"name":"X"} {}`, 400, "invalid_json"},
	} {
		r := e.do(http.MethodPost, "/user/groups", c.body, "owen")
		if r.Code != c.status || r.errCode() != c.code {
			t.Errorf("%.60s: %d %s, want %d %s", c.body, r.Code, r.Body, c.status, c.code)
		}
	}
	if r := e.do(http.MethodPost, "/user/groups", `{"name":"X","members":["ghost","mia","zz"]}`, "owen"); !strings.Contains(string(r.Body), "ghost, zz") {
		t.Errorf("unknown users not listed: %s", r.Body)
	}
	// A user who blocked the creator cannot be put in their group.
	e.do(http.MethodPost, "/user/me/blocks", `{"uid":"owen"}`, "nora")
	before = e.state()
	if r := e.do(http.MethodPost, "/user/groups", `{"name":"X","members":["nora"]}`, "owen"); r.Code != 403 || r.errCode() != "forbidden" {
		t.Errorf("blocked: %d %s", r.Code, r.Body)
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("refused creates changed state")
	}
}

func TestGroupCap(t *testing.T) {
	e := newEnvWith(t, func(d *Deps) { d.MaxGroupMembers = 3 })
	e.users("owen", "a1x", "a2x", "a3x")
	if r := e.do(http.MethodPost, "/user/groups", `{"name":"X","members":["a1x","a2x","a3x"]}`, "owen"); r.Code != 409 || r.errCode() != CodeGroupFull {
		t.Fatalf("over cap: %d %s", r.Code, r.Body)
	}
	g := e.createGroup("owen", "X", "a1x", "a2x")
	before := e.state()
	if r := e.do(http.MethodPost, "/user/groups/"+g.ID+"/members", `{"uid":"a3x"}`, "owen"); r.Code != 409 || r.errCode() != CodeGroupFull {
		t.Fatalf("add over cap: %d %s", r.Code, r.Body)
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("changed")
	}
}

// TestGroupRoleRules walks a group through its lifecycle, trying every
// forbidden action on the way: each is refused with its status and code
// and leaves r/user/ exactly as it was.
func TestGroupRoleRules(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "adam", "alex", "mia", "max", "nora", "blocky")
	var rm removals
	e.svc.OnMemberRemoved(rm.add)
	g := e.createGroup("owen", "Team", "adam", "alex", "mia", "max")
	base := "/user/groups/" + g.ID
	ok := func(method, path, body, user string, status int) resp {
		t.Helper()
		r := e.do(method, base+path, body, user)
		if r.Code != status {
			t.Fatalf("%s %s as %s: %d %s, want %d", method, path, user, r.Code, r.Body, status)
		}
		return r
	}
	ok("POST", "/members", `{"uid":"adam","role":"admin"}`, "owen", 200)
	ok("POST", "/members", `{"uid":"alex","role":"admin"}`, "owen", 200)
	if r, _ := e.svc.Role(g.ID, "adam"); r != RoleAdmin {
		t.Fatalf("adam is %s", r)
	}
	e.do(http.MethodPost, "/user/me/blocks", `{"uid":"adam"}`, "blocky")

	type try struct {
		name, method, path, body, user string
		status                         int
		code                           string
	}
	forbiddenTries := []try{
		{"member adds", "POST", "/members", `{"uid":"nora"}`, "mia", 403, "forbidden"},
		{"member removes member", "DELETE", "/members/max", "", "mia", 403, "forbidden"},
		{"member promotes self", "POST", "/members", `{"uid":"mia","role":"admin"}`, "mia", 403, "forbidden"},
		{"member edits", "PATCH", "", `{"name":"Mine"}`, "mia", 403, "forbidden"},
		{"member transfers", "POST", "/owner", `{"uid":"mia"}`, "mia", 403, "forbidden"},
		{"admin grants admin", "POST", "/members", `{"uid":"mia","role":"admin"}`, "adam", 403, "forbidden"},
		{"admin adds an admin", "POST", "/members", `{"uid":"nora","role":"admin"}`, "adam", 403, "forbidden"},
		{"admin revokes admin", "POST", "/members", `{"uid":"alex","role":"member"}`, "adam", 403, "forbidden"},
		{"admin demotes self", "POST", "/members", `{"uid":"adam","role":"member"}`, "adam", 403, "forbidden"},
		{"admin removes admin", "DELETE", "/members/alex", "", "adam", 403, "forbidden"},
		{"admin removes owner", "DELETE", "/members/owen", "", "adam", 403, "forbidden"},
		{"admin demotes owner", "POST", "/members", `{"uid":"owen","role":"member"}`, "adam", 403, "forbidden"},
		{"admin transfers", "POST", "/owner", `{"uid":"adam"}`, "adam", 403, "forbidden"},
		{"owner demotes self", "POST", "/members", `{"uid":"owen","role":"admin"}`, "owen", 403, "forbidden"},
		{"owner leaves", "DELETE", "/members/owen", "", "owen", 409, CodeOwnerMustTransfer},
		{"admin adds a blocker", "POST", "/members", `{"uid":"blocky"}`, "adam", 403, "forbidden"},
		{"role owner", "POST", "/members", `{"uid":"mia","role":"owner"}`, "owen", 400, CodeInvalidRole},
		{"bad role", "POST", "/members", `{"uid":"mia","role":"king"}`, "owen", 400, CodeInvalidRole},
		{"unknown user", "POST", "/members", `{"uid":"ghost"}`, "owen", 400, CodeUnknownUsers},
		{"uid and uids", "POST", "/members", `{"uid":"nora","uids":["max"]}`, "owen", 400, "validation_failed"},
		{"neither", "POST", "/members", `{}`, "owen", 400, "validation_failed"},
		{"remove a non-member", "DELETE", "/members/nora", "", "owen", 404, CodeNotMember},
		{"transfer to non-member", "POST", "/owner", `{"uid":"nora"}`, "owen", 404, CodeNotMember},
		{"transfer to self", "POST", "/owner", `{"uid":"owen"}`, "owen", 400, CodeSelf},
		{"bad name", "PATCH", "", `{"name":" "}`, "adam", 400, CodeInvalidGroupName},
		{"bad avatar", "PATCH", "", `{"avatar":"javascript:alert(1)"}`, "adam", 400, CodeInvalidAvatar},
		{"long avatar", "PATCH", "", `{"avatar":"https://x/` + strings.Repeat("a", 510) + `"}`, "adam", 400, CodeInvalidAvatar},
		{"bad description", "PATCH", "", `{"description":"a\u0007"}`, "adam", 400, CodeInvalidDescription},
		{"unknown field", "PATCH", "", `{"owner":"adam"}`, "owen", 400, "unknown_field"},
		// Non-members learn nothing: the group does not exist for them.
		{"outsider reads", "GET", "", "", "nora", 404, "not_found"},
		{"outsider lists members", "GET", "/members", "", "nora", 404, "not_found"},
		{"outsider edits", "PATCH", "", `{"name":"X"}`, "nora", 404, "not_found"},
		{"outsider adds self", "POST", "/members", `{"uid":"nora"}`, "nora", 404, "not_found"},
		{"outsider removes", "DELETE", "/members/mia", "", "nora", 404, "not_found"},
		{"outsider transfers", "POST", "/owner", `{"uid":"nora"}`, "nora", 404, "not_found"},
	}
	before := e.state()
	e.pub.reset()
	for _, c := range forbiddenTries {
		r := e.do(c.method, base+c.path, c.body, c.user)
		if r.Code != c.status || r.errCode() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Code, r.Body, c.status, c.code)
		}
		if c.status == 403 && !strings.Contains(r.errMessage(), " ") {
			t.Errorf("%s: the message should say which rule: %s", c.name, r.Body)
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("refused actions changed state")
	}
	if n := e.pub.count(); n != 0 || len(rm.list()) != 0 {
		t.Fatalf("refused actions published %d events / removals %v", n, rm.list())
	}
	if r := e.do("GET", "/user/groups/nosuchgroup", "", "nora"); r.Code != 404 || r.errCode() != "not_found" {
		t.Fatalf("missing group: %d", r.Code)
	}

	// Allowed actions.
	ok("POST", "/members", `{"uid":"nora"}`, "adam", 200)
	if got := e.eventTypes("nora"); !slices.Equal(got, []string{EventGroupMemberAdded}) {
		t.Fatalf("nora events: %v", got)
	}
	if ev := e.pub.events("mia"); len(ev) != 1 || ev[0].Type != EventGroupMemberAdded ||
		!strings.Contains(mustJSON(ev[0].Data), `"uid":"nora"`) || !strings.Contains(mustJSON(ev[0].Data), `"by":"adam"`) {
		t.Fatalf("mia's event: %+v", ev)
	}
	ok("DELETE", "/members/nora", "", "adam", 204)
	if _, member := e.svc.Role(g.ID, "nora"); member {
		t.Fatal("nora still a member right after the removal")
	}
	if got := rm.list(); !slices.Equal(got, []string{g.ID + "/nora"}) {
		t.Fatalf("OnMemberRemoved: %v", got)
	}
	if got := e.eventTypes("nora"); !slices.Equal(got, []string{EventGroupMemberAdded, EventGroupMemberRemoved}) {
		t.Fatalf("removed member is told: %v", got)
	}
	ok("DELETE", "/members/mia", "", "mia", 204) // leaving
	ok("DELETE", "/members/max", "", "adam", 204)
	ok("POST", "/members", `{"uid":"alex","role":"member"}`, "owen", 200) // the owner revokes admin
	ok("DELETE", "/members/alex", "", "adam", 204)                        // now a plain member
	if got := rm.list(); len(got) != 4 {
		t.Fatalf("removals: %v", got)
	}
	r := ok("PATCH", "", `{"name":"Renamed","description":"d\nd","avatar":"https://img.example/a.png"}`, "adam", 200)
	var v viewBody
	r.decode(t, &v)
	if v.Name != "Renamed" || v.Description != "d\nd" || v.Avatar == "" || v.MemberCount != 2 || v.Role != RoleAdmin {
		t.Fatalf("patched: %+v", v)
	}
	if ev := e.eventTypes("owen"); ev[len(ev)-1] != EventGroupUpdated {
		t.Fatalf("owner events: %v", ev)
	}
	n, st := e.pub.count(), e.state()
	if r := ok("PATCH", "", `{}`, "adam", 200); !strings.Contains(string(r.Body), `"Renamed"`) || e.pub.count() != n || !maps.Equal(st, e.state()) {
		t.Fatalf("an empty PATCH changed something: %s", r.Body)
	}
	ok("POST", "/owner", `{"uid":"adam"}`, "owen", 200)
	if r, _ := e.svc.Role(g.ID, "adam"); r != RoleOwner {
		t.Fatalf("adam: %s", r)
	}
	if r, _ := e.svc.Role(g.ID, "owen"); r != RoleAdmin {
		t.Fatalf("owen: %s", r)
	}
	if ev := e.eventTypes("adam"); ev[len(ev)-1] != EventGroupOwnerChanged {
		t.Fatalf("adam events: %v", ev)
	}
	ok("DELETE", "/members/owen", "", "owen", 204) // the old owner may leave now
	ok("DELETE", "/members/adam", "", "adam", 409) // the only owner may not

	var mine struct {
		Groups []viewBody `json:"groups"`
	}
	e.do("GET", "/user/groups", "", "adam").decode(t, &mine)
	if len(mine.Groups) != 1 || mine.Groups[0].Role != RoleOwner || mine.Groups[0].Owner != "adam" || mine.Groups[0].MemberCount != 1 {
		t.Fatalf("adam's groups: %+v", mine)
	}
	e.do("GET", "/user/groups", "", "owen").decode(t, &mine)
	if len(mine.Groups) != 0 {
		t.Fatalf("owen's groups: %+v", mine)
	}
}

func (r resp) errMessage() string {
	var v struct {
		Error struct{ Message string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &v)
	return v.Error.Message
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestGroupETagAndPaging(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "ann", "ben", "cat", "dan")
	g := e.createGroup("owen", "T", "ann", "ben")
	path := "/user/groups/" + g.ID
	r := e.do("GET", path, "", "ann")
	etag := r.Header.Get("ETag")
	if r.Code != 200 || etag == "" || r.Header.Get("Cache-Control") != "private, no-cache" {
		t.Fatalf("get: %d %v", r.Code, r.Header)
	}
	if r := e.do("GET", path, "", "ann", "If-None-Match", etag); r.Code != 304 || len(r.Body) != 0 {
		t.Fatalf("304: %d", r.Code)
	}
	// A membership change shows at once (no stale cached view).
	e.do("POST", path+"/members", `{"uids":["cat","dan"]}`, "owen")
	r = e.do("GET", path, "", "ann", "If-None-Match", etag)
	var v viewBody
	r.decode(t, &v)
	if r.Code != 200 || r.Header.Get("ETag") == etag || v.MemberCount != 5 || len(v.Members) != 5 {
		t.Fatalf("after add: %d %+v", r.Code, v)
	}
	// A batch add is one event naming all added users.
	if ev := e.pub.events("ann"); len(ev) != 2 || !strings.Contains(mustJSON(ev[1].Data), `"uids":["cat","dan"]`) {
		t.Fatalf("batch event: %+v", ev)
	}

	var all []string
	cursor := ""
	for {
		var page struct {
			Members    []GroupMember `json:"members"`
			NextCursor string        `json:"nextCursor"`
		}
		q := path + "/members?limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		e.do("GET", q, "", "dan").decode(t, &page)
		for _, m := range page.Members {
			all = append(all, m.UID+":"+string(m.Role))
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if want := []string{"ann:member", "ben:member", "cat:member", "dan:member", "owen:owner"}; !slices.Equal(all, want) {
		t.Fatalf("paged members: %v", all)
	}
}

func TestGroupHandlersRefuseBadCommands(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "ann")
	g := e.createGroup("owen", "T", "ann")
	before := e.state()
	at := `"at":"2026-01-01T00:00:00Z"`
	for _, c := range []struct {
		typ     byte
		payload string
	}{
		{wire.CmdGroupCreate, `{`},
		{wire.CmdGroupCreate, `{"gid":"` + g.ID + `","owner":"ann","name":"dup","max":10,` + at + `}`},
		{wire.CmdGroupCreate, `{"gid":"a/b","owner":"ann","name":"x","max":10}`},
		{wire.CmdGroupCreate, `{"gid":"newgroup","owner":"ann","name":"x","max":0}`},
		{wire.CmdGroupCreate, `{"gid":"newgroup","owner":"ann","name":"x","max":10,"members":["ghost"]}`},
		{wire.CmdGroupUpdate, `{"gid":"` + g.ID + `","by":"ann","name":"x"}`},
		{wire.CmdGroupUpdate, `{"gid":"` + g.ID + `","by":"owen","name":""}`},
		{wire.CmdGroupMember, `{"gid":"` + g.ID + `","by":"ann","uids":["ann"],"role":"admin","max":10}`},
		{wire.CmdGroupMember, `{"gid":"` + g.ID + `","by":"owen","uids":[],"max":10}`},
		{wire.CmdGroupMember, `{"gid":"` + g.ID + `","by":"owen","uids":["owen"],"remove":true,"max":10}`},
		{wire.CmdGroupOwner, `{"gid":"` + g.ID + `","by":"ann","uid":"ann"}`},
		{wire.CmdGroupOwner, `{"gid":"` + g.ID + `","by":"owen","uid":"ghost"}`},
	} {
		if _, err := e.prop.Propose(t.Context(), c.typ, []byte(c.payload)); err == nil {
			t.Errorf("%#x %s accepted", c.typ, c.payload)
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("refused commands wrote state")
	}
}

// TestConcurrentRoleChangeHandlerWins: the HTTP pre-check passes on the
// state it saw, then a concurrent change lands first; the FSM handler,
// checking committed state, refuses and nothing changes.
func TestConcurrentRoleChangeHandlerWins(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "adam", "mia", "max")
	var rm removals
	e.svc.OnMemberRemoved(rm.add)
	g := e.createGroup("owen", "T", "adam", "mia", "max")
	base := "/user/groups/" + g.ID
	e.do("POST", base+"/members", `{"uid":"adam","role":"admin"}`, "owen")

	demote := func() {
		if r := e.do("POST", base+"/members", `{"uid":"adam","role":"member"}`, "owen"); r.Code != 200 {
			t.Errorf("demote: %d", r.Code)
		}
	}
	e.prop.BeforeNext(demote)
	before := e.state()
	r := e.do("DELETE", base+"/members/mia", "", "adam")
	if r.Code != 403 || r.errCode() != "forbidden" {
		t.Fatalf("removal by a just-demoted admin: %d %s", r.Code, r.Body)
	}
	if _, ok := e.svc.Role(g.ID, "mia"); !ok || len(rm.list()) != 0 {
		t.Fatal("mia removed")
	}
	after := e.state()
	if after["r/user/gm/"+g.ID+"/adam"] != "member" || after["r/user/gm/"+g.ID+"/mia"] != before["r/user/gm/"+g.ID+"/mia"] {
		t.Fatalf("state: %v", after)
	}

	// Ownership moves away while the old owner grants admin.
	transfer := func() {
		if r := e.do("POST", base+"/owner", `{"uid":"max"}`, "owen"); r.Code != 200 {
			t.Errorf("transfer: %d %s", r.Code, r.Body)
		}
	}
	e.prop.BeforeNext(transfer)
	if r := e.do("POST", base+"/members", `{"uid":"mia","role":"admin"}`, "owen"); r.Code != 403 {
		t.Fatalf("grant by a former owner: %d %s", r.Code, r.Body)
	}
	if r, _ := e.svc.Role(g.ID, "mia"); r != RoleMember {
		t.Fatalf("mia: %s", r)
	}
}

// TestConcurrentMembershipInvariants races many writers; afterwards there
// is exactly one owner and the stored count matches the member keys.
func TestConcurrentMembershipInvariants(t *testing.T) {
	e := newEnv(t)
	names := []string{"owen", "ann", "ben", "cat", "dan", "eve", "fay"}
	e.users(names...)
	g := e.createGroup("owen", "T", names[1:]...)
	base := "/user/groups/" + g.ID
	var wg sync.WaitGroup
	for i, u := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				target := names[(i+j)%len(names)]
				switch j % 4 {
				case 0:
					e.do("POST", base+"/members", `{"uid":"`+target+`","role":"admin"}`, u)
				case 1:
					e.do("DELETE", base+"/members/"+target, "", u)
				case 2:
					e.do("POST", base+"/owner", `{"uid":"`+target+`"}`, u)
				default:
					e.do("POST", base+"/members", `{"uid":"`+target+`"}`, u)
				}
				e.svc.Role(g.ID, target)
			}
		}()
	}
	wg.Wait()
	st := e.state()
	owners, members := 0, 0
	for k, v := range st {
		if strings.HasPrefix(k, "r/user/gm/"+g.ID+"/") {
			members++
			if v == string(RoleOwner) {
				owners++
			}
			uid := strings.TrimPrefix(k, "r/user/gm/"+g.ID+"/")
			if st["r/user/ug/"+uid+"/"+g.ID] != v {
				t.Errorf("reverse index of %s: %q vs %q", uid, st["r/user/ug/"+uid+"/"+g.ID], v)
			}
			if r, _ := e.svc.Role(g.ID, uid); string(r) != v {
				t.Errorf("cached role of %s: %s, stored %s", uid, r, v)
			}
		}
	}
	var stored Group
	_ = json.Unmarshal([]byte(st["r/user/g/"+g.ID]), &stored)
	if owners != 1 || stored.MemberCount != members || st["r/user/gm/"+g.ID+"/"+stored.Owner] != "owner" {
		t.Fatalf("owners %d, members %d, stored %+v", owners, members, stored)
	}
	ids, _ := e.svc.MemberIDs(g.ID)
	if len(ids) != members {
		t.Fatalf("MemberIDs %v vs %d", ids, members)
	}
}

func TestUnavailableGroups(t *testing.T) {
	e := newEnv(t)
	e.users("owen")
	e.prop.SetErr(fsmtest.ErrDown)
	r := e.do("POST", "/user/groups", `{"name":"x"}`, "owen")
	if r.Code != 503 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %s", r.Code, r.Body)
	}
}

func TestGroupValueLost(t *testing.T) {
	// A forwarded proposal returns no value: the handlers read back.
	e := newEnv(t)
	e.users("owen", "ann")
	e.prop.LoseValues(true)
	g := e.createGroup("owen", "T")
	if g.ID == "" || g.MemberCount != 1 {
		t.Fatalf("%+v", g)
	}
	if r := e.do("POST", "/user/groups/"+g.ID+"/members", `{"uid":"ann"}`, "owen"); r.Code != 200 {
		t.Fatal(r.Code)
	}
	testutil.CheckFor(t, 2*time.Second, 5*time.Millisecond, func() error {
		if ev := e.eventTypes("ann"); !slices.Contains(ev, EventGroupMemberAdded) {
			return fmt.Errorf("ann's events: %v", ev)
		}
		return nil
	})
}

// The member cap limits additions only: a group over it (the cap set
// lower since) still lets members leave and be removed.
func TestAGroupOverItsCapStillLetsMembersGo(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "adam", "mia", "max")
	g := e.createGroup("owen", "Team", "adam", "mia", "max")
	e.svc.maxMembers = 3 // the node restarted with a lower cap
	if r := e.do(http.MethodDelete, "/user/groups/"+g.ID+"/members/mia", "", "mia"); r.Code != http.StatusNoContent {
		t.Errorf("mia leaving a group over the cap: %d %s", r.Code, r.Body)
	}
	if r := e.do(http.MethodDelete, "/user/groups/"+g.ID+"/members/max", "", "owen"); r.Code != http.StatusNoContent {
		t.Errorf("owner removing max from a group over the cap: %d %s", r.Code, r.Body)
	}
	e.users("zoe", "yan")
	if r := e.do(http.MethodPost, "/user/groups/"+g.ID+"/members", `{"uid":"zoe"}`, "owen"); r.Code != http.StatusOK {
		t.Errorf("adding a third member with a cap of 3: %d %s", r.Code, r.Body)
	}
	if r := e.do(http.MethodPost, "/user/groups/"+g.ID+"/members", `{"uid":"yan"}`, "owen"); r.Code != http.StatusConflict {
		t.Errorf("adding a fourth member with a cap of 3: %d %s, want 409", r.Code, r.Body)
	}
}

// A transfer retried while the first one commits passes the handler's
// check (the caller still owns the group there) and reaches the FSM
// after the transfer: it is done, so it changes nothing and is no
// error. A retry tells the members group.owner_changed again (the first
// attempt's client may have given up before its handler told them).
func TestTransferRetryCommittedSecondChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "mia")
	g := e.createGroup("owen", "Team", "mia")
	cmd := groupOwnerCmd{GID: g.ID, By: "owen", UID: "mia", At: e.clock.Now()}
	if _, err := e.svc.propose(t.Context(), wire.CmdGroupOwner, cmd); err != nil {
		t.Fatal(err)
	}
	before := e.state()
	v, err := e.svc.propose(t.Context(), wire.CmdGroupOwner, cmd)
	if mc, ok := v.(memberChange); err != nil || !ok || len(mc.Changes) != 0 || mc.Group.Owner != "mia" {
		t.Fatalf("the same transfer committed again: %+v, %v", v, err)
	}
	if after := e.state(); !maps.Equal(before, after) {
		t.Fatalf("the retry changed the state")
	}
	e.pub.reset()
	if r := e.do(http.MethodPost, "/user/groups/"+g.ID+"/owner", `{"uid":"mia"}`, "owen"); r.Code != http.StatusOK {
		t.Fatalf("retry over HTTP: %d %s", r.Code, r.Body)
	}
	for _, u := range []string{"owen", "mia"} {
		if got := e.eventTypes(u); !slices.Equal(got, []string{EventGroupOwnerChanged}) {
			t.Errorf("%s's events after the retry: %v", u, got)
		}
	}
}

// A leave sent again while the first commits passes the handler's check
// (still a member there) and reaches the FSM after the leave: done, so
// it changes nothing and is no error; no second group.member_removed.
func TestLeaveRetryCommittedSecondChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "mia")
	g := e.createGroup("owen", "Team", "mia")
	cmd := groupMemberCmd{GID: g.ID, By: "mia", UIDs: []string{"mia"}, Remove: true, Max: 10, At: e.clock.Now()}
	if _, err := e.svc.propose(t.Context(), wire.CmdGroupMember, cmd); err != nil {
		t.Fatal(err)
	}
	before := e.state()
	v, err := e.svc.propose(t.Context(), wire.CmdGroupMember, cmd)
	if mc, ok := v.(memberChange); err != nil || !ok || len(mc.Changes) != 0 {
		t.Fatalf("the same leave committed again: %+v, %v", v, err)
	}
	if after := e.state(); !maps.Equal(before, after) {
		t.Fatalf("the retry changed the state")
	}
	e.pub.reset()
	if r := e.do(http.MethodDelete, "/user/groups/"+g.ID+"/members/mia", "", "mia"); r.Code != http.StatusNoContent {
		t.Fatalf("retry over HTTP: %d %s", r.Code, r.Body)
	}
	if n := e.pub.count(); n != 0 {
		t.Fatalf("the retry published %d events", n)
	}
}

// A create sent again with its Idempotency-Key answers the group as it
// is now and tells its members group.created again (the first answer,
// and the events after it, may have been lost), by its creator; the
// state does not change.
func TestGroupCreateSentAgainTellsMembersAgain(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "mia")
	body := `{"name":"Team","members":["mia"]}`
	r := e.do(http.MethodPost, "/user/groups", body, "owen", "Idempotency-Key", "k")
	if r.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Code, r.Body)
	}
	var g viewBody
	r.decode(t, &g)
	if g.ID != keyedGroupID("owen", "k") {
		t.Fatalf("group ID %s, want the key's", g.ID)
	}
	if r := e.do(http.MethodPost, "/user/groups/"+g.ID+"/owner", `{"uid":"mia"}`, "owen"); r.Code != http.StatusOK {
		t.Fatalf("transfer: %d %s", r.Code, r.Body)
	}
	before := e.state()
	e.pub.reset()
	r = e.do(http.MethodPost, "/user/groups", body, "owen", "Idempotency-Key", "k")
	var again viewBody
	r.decode(t, &again)
	if r.Code != http.StatusOK || again.ID != g.ID || again.Owner != "mia" || again.Role != RoleAdmin || r.Header.Get("Location") != "/user/groups/"+g.ID {
		t.Fatalf("sent again: %d %s", r.Code, r.Body)
	}
	if after := e.state(); !maps.Equal(before, after) {
		t.Fatal("the create sent again changed the state")
	}
	for _, u := range []string{"owen", "mia"} {
		evs := e.pub.events(u)
		if len(evs) != 1 || evs[0].Type != EventGroupCreated || !strings.Contains(fmt.Sprint(evs[0].Data), "by:owen") {
			t.Errorf("%s's events: %+v", u, evs)
		}
	}
}
