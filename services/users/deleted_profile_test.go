package users

import (
	"encoding/json"
	"net/http"
	"testing"
)

// An account deleted and waiting for its erasure (--account-delete-grace)
// is answered by GET /user/{uid} marked deleted, as another region is
// told (ProfileJSON) and as its tombstone will be: messages to the user
// are refused at once, so a client that opened the chat (the web client
// checks "deleted") offered a conversation whose every send failed.
func TestProfileOfADeletedAccountIsMarkedDeleted(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob", "carol")
	e.svc.SetAccounts(deletedAccounts{"bob": true})
	for uid, want := range map[string]bool{"bob": true, "carol": false} {
		r := e.do(http.MethodGet, "/user/"+uid, "", "alice")
		var p Profile
		if r.Code != http.StatusOK || json.Unmarshal(r.Body, &p) != nil || p.UserID != uid || p.Deleted != want {
			t.Errorf("GET /user/%s: %d %s, want deleted %v", uid, r.Code, r.Body, want)
		}
	}
}
