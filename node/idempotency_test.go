package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// apiKeyed is api with an Idempotency-Key header; it returns the status
// and the raw body.
func apiKeyed(t testing.TB, n *nodetest.Node, token, method, path, key string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, n.HTTPURL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := ratelimit.DoHTTP(nil, req, 0)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return 0, nil
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, rb
}

type createdGroup struct {
	ID          string `json:"groupId"`
	Name        string `json:"name"`
	MemberCount int    `json:"memberCount"`
	Error       struct {
		Code string `json:"code"`
	} `json:"error"`
}

func decodeGroup(t testing.TB, b []byte) createdGroup {
	t.Helper()
	var g createdGroup
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return g
}

// myGroupIDs lists the IDs GET /user/groups answers on n.
func myGroupIDs(t testing.TB, n *nodetest.Node, token string) []string {
	t.Helper()
	var mine struct {
		Groups []struct {
			ID string `json:"groupId"`
		} `json:"groups"`
	}
	if code := api(t, n, token, http.MethodGet, "/user/groups", nil, &mine); code != http.StatusOK {
		t.Fatalf("GET /user/groups on %s: %d", n.Config.NodeID, code)
	}
	var ids []string
	for _, g := range mine.Groups {
		ids = append(ids, g.ID)
	}
	return ids
}

// A client that sends POST /user/groups again after a lost answer (a
// timeout, a 503 after the commit, a node that died) must not get a
// second group: with the same Idempotency-Key, on any node, the retry
// answers the group the first request made (200, not 201); the same key
// with another body is refused; two retries racing through two nodes
// agree on one group.
func TestCreateGroupRetryWithIdempotencyKeyMakesOneGroup(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	owner := nodes[0].NewUser(t, "owen")
	nodes[0].NewUser(t, "mia")
	nodes[0].NewUser(t, "max")
	body := map[string]any{"name": "Team", "members": []string{"mia", "max"}}

	code, b := apiKeyed(t, nodes[0], owner, http.MethodPost, "/user/groups", "k-1f3a", body)
	if code != http.StatusCreated {
		t.Fatalf("first create: %d %s", code, b)
	}
	first := decodeGroup(t, b)

	// The retry, on another node (behind a load balancer), members in
	// another order: the same request.
	retry := map[string]any{"name": "Team", "members": []string{"max", "mia"}}
	code, b = apiKeyed(t, nodes[1], owner, http.MethodPost, "/user/groups", "k-1f3a", retry)
	if g := decodeGroup(t, b); code != http.StatusOK || g.ID != first.ID || g.MemberCount != 3 {
		t.Errorf("retry with the same key on n2: %d %s, want 200 with group %s", code, b, first.ID)
	}
	if ids := myGroupIDs(t, nodes[2], owner); len(ids) != 1 {
		t.Errorf("owner's groups after a retried create: %v, want only %s", ids, first.ID)
	}

	// The same key for another request: refused, nothing made.
	code, b = apiKeyed(t, nodes[2], owner, http.MethodPost, "/user/groups", "k-1f3a", map[string]any{"name": "Other"})
	if g := decodeGroup(t, b); code != http.StatusUnprocessableEntity || g.Error.Code != "idempotency_key_reused" {
		t.Errorf("same key, another body: %d %s, want 422 idempotency_key_reused", code, b)
	}

	// Two retries of one request racing through two nodes: one group.
	var wg sync.WaitGroup
	got := make([]createdGroup, 2)
	codes := make([]int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, rb := apiKeyed(t, nodes[1+i], owner, http.MethodPost, "/user/groups", "k-race", map[string]any{"name": "Race"})
			codes[i] = c
			if c == http.StatusOK || c == http.StatusCreated {
				got[i] = decodeGroup(t, rb)
			}
		}()
	}
	wg.Wait()
	if codes[0]+codes[1] != http.StatusOK+http.StatusCreated || got[0].ID == "" || got[0].ID != got[1].ID {
		t.Errorf("racing retries through n2 and n3: %v %+v, want one 201 and one 200 naming the same group", codes, got)
	}
	if ids := myGroupIDs(t, nodes[0], owner); len(ids) != 2 {
		t.Errorf("owner's groups after the race: %v, want 2", ids)
	}

	// Without a key nothing changes: every request makes a group.
	for range 2 {
		if code, b := apiKeyed(t, nodes[0], owner, http.MethodPost, "/user/groups", "", body); code != http.StatusCreated {
			t.Fatalf("create without a key: %d %s", code, b)
		}
	}
	// A malformed key (over 64 bytes) is refused before anything is made.
	if code, b := apiKeyed(t, nodes[0], owner, http.MethodPost, "/user/groups", strings.Repeat("k", 65), body); code != http.StatusBadRequest {
		t.Errorf("malformed key: %d %s, want 400", code, b)
	}
	if ids := myGroupIDs(t, nodes[1], owner); len(ids) != 4 {
		t.Errorf("owner's groups at the end: %v, want 4", ids)
	}
}

// An owner who hands a group over and sends the request again after a
// lost answer (on any node) must not be told 403 "only the owner can
// transfer ownership": the transfer it asked for is done. The retry
// answers 200 with the group, changes nothing and tells nobody again.
func TestTransferOwnershipRetryAnswersTheTransferDone(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	owner := nodes[0].NewUser(t, "owen")
	nodes[0].NewUser(t, "mia")
	code, b := apiKeyed(t, nodes[0], owner, http.MethodPost, "/user/groups", "", map[string]any{"name": "Team", "members": []string{"mia"}})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	gid := decodeGroup(t, b).ID
	type view struct {
		Owner string `json:"owner"`
		Role  string `json:"role"`
	}
	var v view
	if code := api(t, nodes[0], owner, http.MethodPost, "/user/groups/"+gid+"/owner", map[string]string{"uid": "mia"}, &v); code != http.StatusOK || v.Owner != "mia" || v.Role != "admin" {
		t.Fatalf("transfer: %d %+v", code, v)
	}
	for _, n := range nodes[1:] {
		code, b := apiKeyed(t, n, owner, http.MethodPost, "/user/groups/"+gid+"/owner", "", map[string]string{"uid": "mia"})
		var rv view
		_ = json.Unmarshal(b, &rv)
		if code != http.StatusOK || rv.Owner != "mia" || rv.Role != "admin" {
			t.Errorf("the transfer sent again through %s: %d %s, want 200 with mia the owner", n.Config.NodeID, code, b)
		}
	}
	// A plain member asking the same is still refused.
	nodes[0].NewUser(t, "max")
	mia := nodes[0].Token(t, "mia")
	if code := api(t, nodes[0], mia, http.MethodPost, "/user/groups/"+gid+"/members", map[string]string{"uid": "max"}, nil); code != http.StatusOK {
		t.Fatalf("add max: %d", code)
	}
	maxTok := nodes[0].Token(t, "max")
	if code := api(t, nodes[1], maxTok, http.MethodPost, "/user/groups/"+gid+"/owner", map[string]string{"uid": "mia"}, nil); code != http.StatusForbidden {
		t.Errorf("a member asking to make the owner the owner: %d, want 403", code)
	}
}

// A sign-up whose answer was lost (a phone that lost its network, a
// timeout) and that the app sends again must not answer 409
// username_taken for the account it just made: with the same
// Idempotency-Key and password, through any node, the retry answers 200
// with the user ID. Anyone else (another key, or the key with another
// password) is still refused, and a retry never reveals or changes the
// account.
func TestRegisterRetryWithIdempotencyKeyAnswersTheAccount(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	creds := map[string]string{"username": "Nora", "password": "password-nora", "displayName": "Nora"}
	code, b := apiKeyed(t, nodes[0], "", http.MethodPost, "/auth/register", "signup-7c1e", creds)
	if code != http.StatusCreated {
		t.Fatalf("register: %d %s", code, b)
	}
	for _, n := range nodes {
		code, b := apiKeyed(t, n, "", http.MethodPost, "/auth/register", "signup-7c1e", creds)
		var got struct {
			UserID string `json:"userId"`
		}
		_ = json.Unmarshal(b, &got)
		if code != http.StatusOK || got.UserID != "nora" {
			t.Errorf("the sign-up sent again through %s: %d %s, want 200 {userId: nora}", n.Config.NodeID, code, b)
		}
	}
	other := map[string]string{"username": "nora", "password": "another-password"}
	if code, b := apiKeyed(t, nodes[1], "", http.MethodPost, "/auth/register", "signup-7c1e", other); code != http.StatusUnprocessableEntity {
		t.Errorf("the key with another password: %d %s, want 422", code, b)
	}
	for _, key := range []string{"", "signup-other"} {
		if code, b := apiKeyed(t, nodes[2], "", http.MethodPost, "/auth/register", key, creds); code != http.StatusConflict {
			t.Errorf("the same sign-up with key %q: %d %s, want 409 username_taken", key, code, b)
		}
	}
	var tok struct{ AccessToken string }
	if code := api(t, nodes[2], "", http.MethodPost, "/auth/login", map[string]string{"username": "nora", "password": "password-nora"}, &tok); code != http.StatusOK {
		t.Fatalf("login with the first password: %d", code)
	}
	var me struct {
		DisplayName string `json:"displayName"`
	}
	if code := api(t, nodes[1], tok.AccessToken, http.MethodGet, "/user/me", nil, &me); code != http.StatusOK || me.DisplayName != "Nora" {
		t.Errorf("profile: %d %+v", code, me)
	}
}

// uploadKeyed posts body to POST /media on n with an Idempotency-Key.
func uploadKeyed(t testing.TB, n *nodetest.Node, token, name, key string, body []byte) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, n.HTTPURL+"/media?name="+name, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "image/jpeg")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	var out struct {
		MediaID string `json:"mediaId"`
	}
	_ = json.Unmarshal(rb, &out)
	return resp.StatusCode, out.MediaID, rb
}

// A photo whose upload answer was lost and that the app sends again must
// not become a second upload (processed again, counted twice against
// the daily quota, a second file in the store): with the same
// Idempotency-Key, through any node, the retry answers the first
// upload's ID (200, not 202). The key with another file is refused.
func TestUploadRetryWithIdempotencyKeyIsOneUpload(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	tok := nodes[0].NewUser(t, "ulla")
	photo := noisyJPEG(t, 64, 48)
	code, first, b := uploadKeyed(t, nodes[0], tok, "a.jpg", "up-1", photo)
	if code != http.StatusAccepted || first == "" {
		t.Fatalf("upload: %d %s", code, b)
	}
	for _, n := range nodes {
		code, id, b := uploadKeyed(t, n, tok, "a.jpg", "up-1", photo)
		if code != http.StatusOK || id != first {
			t.Errorf("the upload sent again through %s: %d %s, want 200 naming %s", n.Config.NodeID, code, b, first)
		}
	}
	if code, _, b := uploadKeyed(t, nodes[1], tok, "b.jpg", "up-1", photo); code != http.StatusUnprocessableEntity {
		t.Errorf("the key with another file: %d %s, want 422", code, b)
	}
	// Without a key each upload is a new one, as before.
	_, a, _ := uploadKeyed(t, nodes[2], tok, "a.jpg", "", photo)
	_, c, _ := uploadKeyed(t, nodes[2], tok, "a.jpg", "", photo)
	if a == "" || a == c || a == first {
		t.Errorf("uploads without a key: %q %q", a, c)
	}
	var info struct {
		Status string `json:"status"`
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if code := api(t, nodes[1], tok, http.MethodGet, "/media/"+first+"/info", nil, &info); code != http.StatusOK || info.Status != "ready" {
			return fmt.Errorf("info of %s: %d %+v", first, code, info)
		}
		return nil
	})
}

// A member who leaves a group and sends the request again after a lost
// answer must not be told 404 "no such group" (the app would say the
// leave failed): leaving a group one is not in answers 204 and changes
// nothing, on any node. Removing someone else who is not a member is
// still 404 not_a_member.
func TestLeaveGroupRetryAnswersTheLeaveDone(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	owner := nodes[0].NewUser(t, "owen")
	mia := nodes[0].NewUser(t, "mia")
	code, b := apiKeyed(t, nodes[0], owner, http.MethodPost, "/user/groups", "", map[string]any{"name": "Team", "members": []string{"mia"}})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	gid := decodeGroup(t, b).ID
	if code := api(t, nodes[0], mia, http.MethodDelete, "/user/groups/"+gid+"/members/mia", nil, nil); code != http.StatusNoContent {
		t.Fatalf("leave: %d", code)
	}
	for _, n := range nodes {
		if code, b := apiKeyed(t, n, mia, http.MethodDelete, "/user/groups/"+gid+"/members/mia", "", nil); code != http.StatusNoContent {
			t.Errorf("the leave sent again through %s: %d %s, want 204", n.Config.NodeID, code, b)
		}
	}
	var g struct {
		MemberCount int `json:"memberCount"`
	}
	if code := api(t, nodes[2], owner, http.MethodGet, "/user/groups/"+gid, nil, &g); code != http.StatusOK || g.MemberCount != 1 {
		t.Errorf("the group after the leave and its retries: %d %+v", code, g)
	}
	if code := api(t, nodes[1], owner, http.MethodDelete, "/user/groups/"+gid+"/members/mia", nil, nil); code != http.StatusNotFound {
		t.Errorf("the owner removing a user who is not a member: %d, want 404", code)
	}
}

// An "add member" whose client gave up (a timeout) after the change
// committed never had its group.member_added published: the handler
// stopped waiting. The retry finds nothing to change and answered 200
// with no event either, so the new member's devices were never told to
// subscribe to the group and missed its messages live until they
// reconnected. A request that changes nothing tells its members again.
func TestAddMemberRetryTellsTheNewMember(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	owner := nodes[0].NewUser(t, "owen")
	mia := nodes[0].NewUser(t, "mia")
	code, b := apiKeyed(t, nodes[0], owner, http.MethodPost, "/user/groups", "", map[string]any{"name": "Team"})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	gid := decodeGroup(t, b).ID
	c := mustConnectV5(t, nodes[2].MQTTURL, "mia", "phone", mia)
	c.MustSub(t, "user/mia/events")
	// The first request's change, committed with nothing after it.
	cmd, _ := json.Marshal(map[string]any{"gid": gid, "by": "owen", "uids": []string{"mia"}, "role": "member", "max": 10000, "at": time.Now().UTC()})
	if _, err := node.Propose(t.Context(), nodes[0].Node, wire.CmdGroupMember, cmd); err != nil {
		t.Fatal(err)
	}
	if code := api(t, nodes[1], owner, http.MethodPost, "/user/groups/"+gid+"/members", map[string]string{"uid": "mia"}, nil); code != http.StatusOK {
		t.Fatalf("the add sent again: %d", code)
	}
	m := c.Next(t)
	var ev struct {
		Type string `json:"type"`
		Data struct {
			GID string `json:"gid"`
			UID string `json:"uid"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Payload, &ev); err != nil || ev.Type != "group.member_added" || ev.Data.GID != gid || ev.Data.UID != "mia" {
		t.Fatalf("mia's event: %s (%v), want group.member_added of %s", m.Payload, err, gid)
	}
}
