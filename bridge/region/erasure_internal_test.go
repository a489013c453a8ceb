package region

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

func TestParseErase(t *testing.T) {
	for _, c := range []struct {
		payload, uid string
		err          error
	}{
		{`{"uid":"bob@us"}`, "bob@us", nil},
		{`{"uid":"bob@asia"}`, "", wire.ErrForbidden}, // not a user of the link's region
		{`{"uid":"bob@eu"}`, "", wire.ErrForbidden},   // one of ours
		{`{"uid":"bob"}`, "", wire.ErrInvalid},
		{`{"uid":"b/b@us"}`, "", wire.ErrInvalid},
		{`{"uid":"@us"}`, "", wire.ErrInvalid},
		{`{}`, "", wire.ErrInvalid},
		{`[]`, "", wire.ErrInvalid},
	} {
		uid, err := parseErase([]byte(c.payload), "us")
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: %q %v, want %v", c.payload, uid, err, c.err)
			}
			continue
		}
		if err != nil || uid != c.uid {
			t.Errorf("%s: %q %v", c.payload, uid, err)
		}
	}
	// What a link sends for a staged erasure is what the other region accepts.
	topic, p, kind, err := linkPayload(append([]byte{eraseMark}, `{"uid":"bob"}`...), "us", 7)
	if err != nil || topic != BatchTopic("us") || kind != frameErase {
		t.Fatalf("linkPayload: %q %s %q %v", topic, p, kind, err)
	}
	if uid, err := parseErase(p, "us"); err != nil || uid != "bob@us" {
		t.Fatalf("the link's erasure %s: %q %v", p, uid, err)
	}
	if _, err := parseBatch([]byte(`[{"k":"erase","p":` + string(p) + `}]`)); err != nil {
		t.Fatalf("a batch with an erasure: %v", err)
	}
}

// An erasure goes alone in its batch: a region of an earlier version
// refuses a batch with a kind it does not know as a whole, and the link
// skips a refused batch; the messages around the erasure must not go
// with it.
func TestEraseFrameGoesAloneInItsBatch(t *testing.T) {
	dm := func(pos uint64) outgoing { return outgoing{pos: pos, kind: "dm", payload: json.RawMessage(`{"id":1}`)} }
	erase := func(pos uint64) outgoing {
		return outgoing{pos: pos, kind: frameErase, payload: json.RawMessage(`{"uid":"bob@us"}`)}
	}
	groups, payloads, tooLarge := batches([]outgoing{dm(0), erase(1), dm(2), dm(3), erase(4), erase(5)})
	if len(tooLarge) != 0 || len(payloads) != len(groups) {
		t.Fatalf("tooLarge %v, %d payloads for %d groups", tooLarge, len(payloads), len(groups))
	}
	var got [][]uint64
	for _, g := range groups {
		var ps []uint64
		for _, e := range g {
			ps = append(ps, e.pos)
		}
		got = append(got, ps)
	}
	want := [][]uint64{{0}, {1}, {2, 3}, {4}, {5}}
	if len(got) != len(want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) || got[i][0] != want[i][0] {
			t.Fatalf("batches %v, want %v", got, want)
		}
	}
	// An earlier version's parseBatch (no "erase") refused the whole batch.
	for i, p := range payloads {
		fs, err := parseBatch(p)
		if err != nil || len(fs) != len(want[i]) {
			t.Fatalf("batch %d %s: %v", i, p, err)
		}
	}
}

func FuzzParseErase(f *testing.F) {
	for _, s := range []string{`{"uid":"bob@us"}`, `{"uid":"bob"}`, `{"uid":"bob@eu"}`, `{"uid":null}`, `[]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		uid, err := parseErase(p, "us")
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) && !errors.Is(err, wire.ErrForbidden) {
				t.Fatalf("%q: %v is neither invalid nor forbidden (the batch would be sent again for ever)", p, err)
			}
			return
		}
		if wire.ValidPeerID(uid) != nil || uid[len(uid)-3:] != "@us" {
			t.Fatalf("%q: accepted %q", p, uid)
		}
	})
}
