package region

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

func gmsg(from, group string) string {
	return `{"id":"7211938138472448001","from":"` + from + `","group":"` + group + `","cid":"c1","type":"text","body":"hi"}`
}

// What a link may bring as a group message, seen from us: a message to
// a group of ours from a user of the link's region; a message of the
// link's own group from anyone but our users. Everything else is forged
// or malformed.
func TestGroupMessageChecks(t *testing.T) {
	for _, c := range []struct {
		link, payload string
		group, from   string // as stored; "" when refused
		forged        bool
	}{
		{"eu", gmsg("alice@eu", "g1@us"), "g1", "alice@eu", false},                                      // a member of eu writes to our group
		{"eu", gmsg("alice@eu", "g1@eu"), "g1@eu", "alice@eu", false},                                   // eu relays its own member
		{"eu", gmsg("carol@ap", "g1@eu"), "g1@eu", "carol@ap", false},                                   // eu relays a member of a third region
		{"eu", gmsg("carol@ap", "g1@us"), "", "", true},                                                 // our group: only eu's users through eu
		{"eu", gmsg("bob@us", "g1@us"), "", "", true},                                                   // our own user, from outside
		{"eu", gmsg("bob@us", "g1@eu"), "", "", true},                                                   // our user's message sent back
		{"eu", gmsg("alice@eu", "g1@ap"), "", "", true},                                                 // ap's group: ap relays, not eu
		{"eu", gmsg("alice", "g1@eu"), "", "", true},                                                    // unqualified sender
		{"eu", gmsg("alice@eu", "g1"), "", "", false},                                                   // unqualified group: malformed
		{"eu", `{"from":"alice@eu","group":"g1@eu","cid":"c","type":"text","body":"x"}`, "", "", false}, // no id
		{"eu", `{"id":"1","from":"alice@eu","to":"bob","group":"g1@eu","cid":"c","type":"text","body":"x"}`, "", "", false},
		{"eu", `not json`, "", "", false},
	} {
		env, forged, err := groupMessage("us", c.link, []byte(c.payload))
		if c.group != "" {
			if err != nil || env.Group != c.group || env.From != c.from || env.ID == 0 || env.To != "" {
				t.Errorf("%s: %+v, %v; want group %s from %s", c.payload, env, err, c.group, c.from)
			}
			continue
		}
		want := wire.ErrInvalid
		if c.forged {
			want = wire.ErrForbidden
		}
		if err == nil || forged != c.forged || !errors.Is(err, want) {
			t.Errorf("%s: forged %v, %v; want forged %v (%v)", c.payload, forged, err, c.forged, want)
		}
	}
}

// The home's view of its group becomes ours: gid@home, its users
// name@home, ours plain, a third region's as they are.
func TestMirrorState(t *testing.T) {
	in := `{"group":{"groupId":"g1","name":"n","owner":"alice","memberCount":4},"members":[` +
		`{"id":"alice","role":"owner"},{"id":"bob@us","role":"member"},{"id":"carol@ap","role":"admin"},{"id":"dave@us","role":"member"}]}`
	out, err := mirrorState("us", "eu", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Group struct {
			ID    string `json:"groupId"`
			Owner string `json:"owner"`
			Name  string `json:"name"`
		} `json:"group"`
		Members []struct{ ID, Role string } `json:"members"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range st.Members {
		ids = append(ids, m.ID+":"+m.Role)
	}
	if st.Group.ID != "g1@eu" || st.Group.Owner != "alice@eu" || st.Group.Name != "n" ||
		!slices.Equal(ids, []string{"alice@eu:owner", "bob:member", "carol@ap:admin", "dave:member"}) {
		t.Fatalf("mirror %s", out)
	}
	for _, bad := range []string{
		`{"group":{"groupId":"g1@ap"},"members":[]}`, // a qualified ID: not the home's own group
		`{"group":{"groupId":"g/1"},"members":[]}`,
		`{"group":{},"members":[]}`,
		`{"group":{"groupId":"g1"},"members":[{"id":"bad/id","role":"member"}]}`,
		`{"group":{"groupId":"g1"},"members":[{"id":"bob@","role":"member"}]}`,
		`[]`,
	} {
		if _, err := mirrorState("us", "eu", []byte(bad)); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", bad, err)
		}
	}
}

// An outbox entry becomes the link's publish: group messages qualified
// with the home and the sender's region, states as they are with their
// seq (the outbox position + 1) first.
func TestLinkPayloadOfGroups(t *testing.T) {
	topic, p, kind, err := linkPayload([]byte(`{"id":"5","from":"alice","group":"g1","cid":"c","type":"text","body":"x","mentions":["bob","carol@us"]}`), "eu", 0)
	if err != nil || topic != "$link/eu/gmsg" || kind != "message" || !strings.Contains(string(p), `"from":"alice@eu"`) ||
		!strings.Contains(string(p), `"group":"g1@eu"`) || !strings.Contains(string(p), `"mentions":["bob@eu","carol@us"]`) {
		t.Fatalf("home message: %s %s %s %v", topic, p, kind, err)
	}
	_, p, _, err = linkPayload([]byte(`{"id":"5","from":"bob","group":"g1@eu","cid":"c","type":"text","body":"x"}`), "us", 0)
	if err != nil || !strings.Contains(string(p), `"from":"bob@us"`) || !strings.Contains(string(p), `"group":"g1@eu"`) {
		t.Fatalf("mirror message: %s %v", p, err)
	}
	topic, p, kind, err = linkPayload(append([]byte{stateMark}, `{"group":{}}`...), "eu", 0)
	if err != nil || topic != "$link/eu/group" || kind != "state" || string(p) != `{"seq":1,"group":{}}` {
		t.Fatalf("state: %s %s %s %v", topic, p, kind, err)
	}
	if _, p, _, err = linkPayload(append([]byte{stateMark}, `{}`...), "eu", 41); err != nil || string(p) != `{"seq":42}` {
		t.Fatalf("empty state: %s %v", p, err)
	}
	// The receiving region reads the seq and passes it on to its mirror.
	_, p, _, _ = linkPayload(append([]byte{stateMark}, `{"group":{"groupId":"g1"},"members":[{"id":"bob@us","role":"member"}]}`...), "eu", 6)
	if out, err := mirrorState("us", "eu", p); err != nil || !strings.Contains(string(out), `"seq":7`) {
		t.Fatalf("mirror of %s: %s %v", p, out, err)
	}
	if topic, _, kind, err = linkPayload([]byte(`{"id":"5","from":"alice","to":"bob@us","cid":"c","type":"text","body":"x"}`), "eu", 0); err != nil || topic != "$link/eu/dm" || kind != "dm" {
		t.Fatalf("dm: %s %s %v", topic, kind, err)
	}
}

// Whatever a link brings, groupMessage and mirrorState never panic, and
// what they accept is well formed.
func FuzzGroupMessage(f *testing.F) {
	f.Add(gmsg("alice@eu", "g1@us"))
	f.Add(gmsg("carol@ap", "g1@eu"))
	f.Add(`{"id":"1","from":"a@eu","group":"@eu"}`)
	f.Fuzz(func(t *testing.T, payload string) {
		env, forged, err := groupMessage("us", "eu", []byte(payload))
		if err != nil {
			if forged != errors.Is(err, wire.ErrForbidden) {
				t.Fatalf("forged %v, %v", forged, err)
			}
			return
		}
		if env.ID == 0 || env.To != "" || wire.ValidGroupID(env.Group) != nil || wire.ValidPeerID(env.From) != nil || address.RegionOf(env.From) == "" {
			t.Fatalf("accepted %+v", env)
		}
	})
}

func FuzzMirrorState(f *testing.F) {
	f.Add(`{"group":{"groupId":"g1","owner":"alice"},"members":[{"id":"alice","role":"owner"},{"id":"bob@us","role":"member"}]}`)
	f.Add(`{"group":{"groupId":"g1"},"members":null}`)
	f.Add(`{"group":{"groupId":"g1"},"members":[{"id":"bob@us","role":"member"}],"by":"alice","part":1,"parts":3}`)
	f.Fuzz(func(t *testing.T, payload string) {
		out, err := mirrorState("us", "eu", []byte(payload))
		if err != nil {
			return
		}
		var st linkState
		var gid string
		if json.Unmarshal(out, &st) != nil || json.Unmarshal(st.Group["groupId"], &gid) != nil || address.RegionOf(gid) != "eu" ||
			st.Part < 0 || st.Part >= max(st.Parts, 1) || st.Parts > MaxStateParts || st.By != "" && wire.ValidPeerID(st.By) != nil && wire.ValidUserID(st.By) != nil {
			t.Fatalf("%s", out)
		}
		for _, m := range st.Members {
			if wire.ValidPeerID(m.ID) != nil || address.RegionOf(m.ID) == "us" {
				t.Fatalf("member %q in %s", m.ID, out)
			}
		}
	})
}

// Entries pack into batches in order, none over maxBatchBytes; an entry
// too big alone is left out; every batch parses back to its entries.
func TestBatchesPackInOrder(t *testing.T) {
	big := `{"body":"` + strings.Repeat("x", 15<<10) + `"}`
	var entries []outgoing
	for i := range 20 {
		entries = append(entries, outgoing{pos: uint64(i), kind: []string{"dm", "message", "state"}[i%3], payload: []byte(big)})
	}
	entries = append(entries, outgoing{pos: 20, kind: "dm", payload: []byte(`{"body":"` + strings.Repeat("y", maxBatchBytes) + `"}`)})
	groups, payloads, tooLarge := batches(entries)
	if len(tooLarge) != 1 || tooLarge[0].pos != 20 {
		t.Fatalf("too large: %+v", tooLarge)
	}
	var pos []uint64
	for i, p := range payloads {
		fs, err := parseBatch(p)
		if err != nil || len(fs) != len(groups[i]) {
			t.Fatalf("batch %d: %d frames, %v", i, len(fs), err)
		}
		if len(p) > maxBatchBytes {
			t.Fatalf("batch %d: %d bytes", i, len(p))
		}
		for j, f := range fs {
			e := groups[i][j]
			if f.Kind != frameKind(e.kind) || string(f.P) != string(e.payload) {
				t.Fatalf("batch %d frame %d: %s", i, j, f.Kind)
			}
			pos = append(pos, e.pos)
		}
	}
	if len(pos) != 20 || !slices.IsSorted(pos) || len(payloads) < 6 {
		t.Fatalf("positions %v in %d batches", pos, len(payloads))
	}
}

func FuzzParseBatch(f *testing.F) {
	f.Add(`[{"k":"dm","p":{"id":"1"}},{"k":"group","p":{}}]`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, payload string) {
		fs, err := parseBatch([]byte(payload))
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) {
				t.Fatal(err)
			}
			return
		}
		for _, f := range fs {
			if len(f.P) == 0 || (f.Kind != "dm" && f.Kind != "gmsg" && f.Kind != "group" && f.Kind != frameRel && f.Kind != frameUndeliverable) {
				t.Fatalf("accepted %+v", f)
			}
		}
	})
}
