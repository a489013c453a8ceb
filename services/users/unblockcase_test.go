package users

import (
	"net/http"
	"strings"
	"testing"
)

// Unblocking (or removing a contact) under the name as the user typed
// it, with capitals, said 204 and changed nothing: DELETE
// /user/me/blocks/Bob left bob blocked while the client was told the
// block was gone (and adding "Bob" answers 404 with the lowercase
// hint). It is refused the same way now, and nothing else changes.
func TestRemovingABlockOrContactByACapitalisedNameSaysUserIDsAreLowercase(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob")
	for _, list := range []string{"blocks", "contacts"} {
		if r := e.do("POST", "/user/me/"+list, `{"uid":"bob"}`, "alice"); r.Code != http.StatusCreated {
			t.Fatalf("add bob to %s: %d %s", list, r.Code, r.Body)
		}
		r := e.do("DELETE", "/user/me/"+list+"/Bob", "", "alice")
		if r.Code != http.StatusNotFound || !strings.Contains(string(r.Body), "user IDs are lowercase: bob") {
			t.Errorf("DELETE /user/me/%s/Bob: %d %s, want 404 saying user IDs are lowercase: bob", list, r.Code, r.Body)
		}
		var v map[string][]Profile
		e.do("GET", "/user/me/"+list, "", "alice").decode(t, &v)
		if len(v[list]) != 1 || v[list][0].UserID != "bob" {
			t.Errorf("%s after DELETE .../Bob: %+v, want bob still there", list, v[list])
		}
		// The name as it is removes it; an absent one is still 204.
		for i := range 2 {
			if r := e.do("DELETE", "/user/me/"+list+"/bob", "", "alice"); r.Code != http.StatusNoContent {
				t.Errorf("DELETE /user/me/%s/bob (%d): %d %s, want 204", list, i+1, r.Code, r.Body)
			}
		}
	}
}
