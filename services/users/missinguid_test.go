package users

import (
	"net/http"
	"strings"
	"testing"
)

// A request that names nobody ({} or "uid": null) is refused as a bad
// request that says uid is required: adding a contact or a block
// answered 404 "no such user", and handing a group over 404 not_a_member
// "not a member of the group: " (an empty name), as if the user had
// asked about someone in particular.
func TestARequestWithoutItsUIDSaysUIDIsRequired(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob")
	r := e.do("POST", "/user/groups", `{"name":"T","members":["bob"]}`, "alice")
	if r.Code != http.StatusCreated {
		t.Fatalf("create group: %d %s", r.Code, r.Body)
	}
	var g struct{ GroupID string }
	r.decode(t, &g)
	for _, path := range []string{"/user/me/contacts", "/user/me/blocks", "/user/groups/" + g.GroupID + "/owner"} {
		for _, body := range []string{`{}`, `{"uid":null}`, `{"uid":""}`} {
			r := e.do("POST", path, body, "alice")
			if r.Code != http.StatusBadRequest || r.errCode() != "validation_failed" || !strings.Contains(string(r.Body), "uid is required") {
				t.Errorf("POST %s %s: %d %s, want 400 validation_failed saying uid is required", path, body, r.Code, r.Body)
			}
		}
	}
	// Naming someone is answered as before.
	if r := e.do("POST", "/user/me/contacts", `{"uid":"zed"}`, "alice"); r.Code != http.StatusNotFound {
		t.Errorf("contact zed: %d %s, want 404", r.Code, r.Body)
	}
	if r := e.do("POST", "/user/groups/"+g.GroupID+"/owner", `{"uid":"bob"}`, "alice"); r.Code != http.StatusOK {
		t.Errorf("hand the group to bob: %d %s, want 200", r.Code, r.Body)
	}
}
