package users

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// eu committed bob@us's erasure (us erased him and told eu: the auth
// service's record r/auth/gone/bob@us) and its leader's sweeper has not
// written his tombstone yet: the erasure's steps follow the decision,
// the users service's part (relations first, the tombstone last) may
// take several. Meanwhile GET /user/bob@us answered his old profile
// from the link's cache of remote profiles (display name, avatar), and
// a block of him went on, though eu treats him as erased from the
// decision on (a message to him is refused, a group with him too).
// Both now answer as for his tombstone.
func TestProfileOfAUserOfAnotherRegionWhoseErasureIsDecided(t *testing.T) {
	e := newEnv(t)
	e.users("alice")
	e.svc.SetRegions(fakeRegions{})
	e.svc.SetRemoteProfiles(fakeRemote{}) // answers bob@us's profile (a cached copy)
	e.svc.SetAccounts(laggingAccounts{})
	if r := e.do(http.MethodGet, "/user/bob@us", "", "alice"); r.Code != http.StatusOK || !json.Valid(r.Body) {
		t.Fatalf("GET /user/bob@us before: %d %s", r.Code, r.Body)
	}
	if err := e.db.Update(func(tx *badger.Txn) error { return tx.Set([]byte("r/auth/gone/bob@us"), []byte(`{}`)) }); err != nil {
		t.Fatal(err)
	}
	r := e.do(http.MethodGet, "/user/bob@us", "", "alice")
	var p Profile
	if r.Code != http.StatusOK || json.Unmarshal(r.Body, &p) != nil || !p.Deleted || p.DisplayName != DeletedDisplayName || p.UserID != "bob@us" {
		t.Errorf("GET /user/bob@us with his erasure decided: %d %s, want his tombstone", r.Code, r.Body)
	}
	if r := e.do(http.MethodPost, "/user/me/blocks", `{"uid":"bob@us"}`, "alice"); r.Code != http.StatusNotFound {
		t.Errorf("alice blocks bob@us with his erasure decided: %d %s, want 404", r.Code, r.Body)
	}
}
