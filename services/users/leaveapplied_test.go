package users

import "testing"

// A pending leave (seq 7 of us) ends with the home's state that tells it
// applied; a home of an earlier version tells no leaves (nil): the leave
// ends with its first state without the member, as before; a pending
// leave an earlier version wrote (seq 0) likewise.
func TestLeaveApplied(t *testing.T) {
	with := []RemoteMember{{ID: "alice@eu", Role: RoleOwner}, {ID: "bob", Role: RoleMember}}
	without := with[:1]
	for _, c := range []struct {
		name    string
		members []RemoteMember
		leaves  map[string]uint64
		seq     uint64
		want    bool
	}{
		{"home has not seen it, lists him", with, map[string]uint64{}, 7, false},
		{"home has not seen it, removed him", without, map[string]uint64{"us": 6, "ap": 9}, 7, false},
		{"home applied it, added him again", with, map[string]uint64{"us": 7}, 7, true},
		{"home applied a later one", without, map[string]uint64{"us": 9}, 7, true},
		{"earlier home, lists him", with, nil, 7, false},
		{"earlier home, removed him", without, nil, 7, true},
		{"earlier pending, lists him", with, map[string]uint64{"us": 9}, 0, false},
		{"earlier pending, removed him", without, map[string]uint64{}, 0, true},
	} {
		if got := leaveApplied(RemoteGroup{Members: c.members, Leaves: c.leaves}, "us", "bob", c.seq); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
