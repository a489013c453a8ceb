package users

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// laggingAccounts is the auth service of a node that has not applied
// bob@us's erasure yet (its in-memory set says no) while the state a
// change is applied on has it (r/auth/gone/).
type laggingAccounts struct{}

func (laggingAccounts) Deleted(string) bool { return false }

func (laggingAccounts) DeletedIn(tx *badger.Txn, uid string) (bool, error) {
	_, err := tx.Get([]byte("r/auth/gone/" + uid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// eu erased bob@us (us erased him and told eu). A group change that
// adds him, checked on a node that did not know yet (an erasure of
// another region has no grace period) and applied after, is refused
// (400 unknown_users), as one adding an erased user of eu: before, he
// became a member for good (the erasure leaves memberships to the
// leaves us sends, and us, which never had him in the group, sends
// none), and eu sent the group's state and messages to us for him.
func TestGroupMemberOfAnErasedUserOfAnotherRegionRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		gone string // the key eu's state holds of the erasure
	}{
		{"decided", "r/auth/gone/bob@us"}, // not erased yet
		{"erased", prefixGoneProfile + "bob@us"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.users("owen", "adam")
			e.svc.SetRegions(fakeRegions{})
			e.svc.SetAccounts(laggingAccounts{})
			v := e.createGroup("owen", "Team", "adam")
			if err := e.db.Update(func(tx *badger.Txn) error { return tx.Set([]byte(c.gone), []byte(`{}`)) }); err != nil {
				t.Fatal(err)
			}
			if r := e.do(http.MethodPost, "/user/groups", `{"name":"x","members":["bob@us"]}`, "owen"); r.Code != http.StatusBadRequest || !strings.Contains(string(r.Body), "unknown_users") {
				t.Errorf("a group with the erased bob@us: %d %s", r.Code, r.Body)
			}
			if r := e.do(http.MethodPost, "/user/groups/"+v.ID+"/members", `{"uid":"bob@us"}`, "owen"); r.Code != http.StatusBadRequest || !strings.Contains(string(r.Body), "unknown_users") {
				t.Errorf("adding the erased bob@us: %d %s", r.Code, r.Body)
			}
			if _, ok := e.svc.Role(v.ID, "bob@us"); ok {
				t.Error("the erased bob@us is a member")
			}
		})
	}
}
