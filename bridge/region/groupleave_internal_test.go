package region

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

func TestParseLeave(t *testing.T) {
	for _, c := range []struct {
		payload  string
		gid, uid string
		err      error
	}{
		{`{"group":"k3x9@eu","uid":"bob@us"}`, "k3x9", "bob@us", nil},
		{`{"group":"k3x9@eu","uid":"bob@asia"}`, "", "", wire.ErrForbidden}, // not a user of the link's region
		{`{"group":"k3x9@eu","uid":"bob"}`, "", "", wire.ErrForbidden},
		{`{"group":"k3x9@eu","uid":"bob@eu"}`, "", "", wire.ErrForbidden},
		{`{"group":"k3x9@us","uid":"bob@us"}`, "", "", wire.ErrInvalid}, // not a group of ours
		{`{"group":"k3x9","uid":"bob@us"}`, "", "", wire.ErrInvalid},
		{`{"group":"a@b@eu","uid":"bob@us"}`, "", "", wire.ErrInvalid},
		{`{"group":"k3x9@eu","uid":"b/b@us"}`, "", "", wire.ErrInvalid},
		{`[]`, "", "", wire.ErrInvalid},
	} {
		gid, uid, _, err := parseLeave("eu", "us", []byte(c.payload))
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: %q %q %v, want %v", c.payload, gid, uid, err, c.err)
			}
			continue
		}
		if err != nil || gid != c.gid || uid != c.uid {
			t.Errorf("%s: %q %q %v", c.payload, gid, uid, err)
		}
	}
	// What a link sends for a staged leave is what the home accepts.
	p, err := leavePayload([]byte(`{"group":"k3x9@eu","uid":"bob"}`), "us", 3)
	if err != nil {
		t.Fatal(err)
	}
	if gid, uid, seq, err := parseLeave("eu", "us", p); err != nil || gid != "k3x9" || uid != "bob@us" || seq != 3 {
		t.Fatalf("%s: %q %q %d %v", p, gid, uid, seq, err)
	}
	// The seq is the entry's outbox position + 1; a leave without one (a
	// region of an earlier version) reads as 0.
	_, p, kind, err := linkPayload(append([]byte{leaveMark}, `{"group":"k3x9@eu","uid":"bob"}`...), "us", 0)
	if err != nil || kind != "leave" || !strings.Contains(string(p), `"seq":1`) {
		t.Fatalf("linkPayload of a leave: %s %s %v", p, kind, err)
	}
	if _, _, seq, err := parseLeave("eu", "us", []byte(`{"group":"k3x9@eu","uid":"bob@us"}`)); err != nil || seq != 0 {
		t.Fatalf("a leave without seq: %d %v", seq, err)
	}
}

// FuzzParseLeave: a leave the home accepts names a group of its own and
// a user of the link's region.
func FuzzParseLeave(f *testing.F) {
	f.Add([]byte(`{"group":"k3x9@eu","uid":"bob@us"}`))
	f.Add([]byte(`{"group":"k3x9@us","uid":"bob"}`))
	f.Add([]byte(`{"group":"@eu","uid":"@us"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		gid, uid, _, err := parseLeave("eu", "us", payload)
		if err != nil {
			return
		}
		if wire.ValidGroupID(gid) != nil || strings.Contains(gid, "@") || !strings.HasSuffix(uid, "@us") || wire.ValidPeerID(uid) != nil {
			t.Fatalf("%q: accepted %q %q", payload, gid, uid)
		}
	})
}
