package region

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// What a link may bring as a relation, seen from us: a contact or block
// of a user of the link's region (eu) about a user of us; anything else
// is refused, forged owners and recipients elsewhere as forbidden.
func TestParseRelation(t *testing.T) {
	for _, c := range []struct {
		p    string
		want error // nil: accepted
	}{
		{`{"kind":"block","owner":"alice@eu","uid":"bob@us","add":true,"at":"2026-12-04T10:00:00Z"}`, nil},
		{`{"kind":"contact","owner":"alice@eu","uid":"bob@us"}`, nil},
		{`{"kind":"mute","owner":"alice@eu","uid":"bob@us"}`, wire.ErrInvalid},
		{`{"kind":"block","owner":"alice@asia","uid":"bob@us"}`, wire.ErrForbidden}, // a third region
		{`{"kind":"block","owner":"alice","uid":"bob@us"}`, wire.ErrForbidden},      // unqualified
		{`{"kind":"block","owner":"carol@us","uid":"bob@us"}`, wire.ErrForbidden},   // our own user
		{`{"kind":"block","owner":"alice@eu","uid":"bob@eu"}`, wire.ErrForbidden},   // not ours
		{`{"kind":"block","owner":"alice@eu","uid":"bob"}`, wire.ErrForbidden},
		{`{"kind":"block","owner":"alice@eu","uid":"B@us"}`, wire.ErrForbidden},
		{`[1]`, wire.ErrInvalid},
	} {
		r, uid, err := parseRelation([]byte(c.p), "eu", "us")
		switch {
		case c.want == nil && (err != nil || uid != "bob" || r.Owner != "alice@eu"):
			t.Errorf("%s: %+v %q %v", c.p, r, uid, err)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", c.p, err, c.want)
		}
	}
}

// What a link may bring as an undeliverable notice, seen from eu: about
// a message of a user of eu to a user of the link's region (us), or to a
// group of that region.
func TestParseNotice(t *testing.T) {
	for _, c := range []struct {
		p    string
		want error
	}{
		{`{"id":"7211938138472448001","from":"alice@eu","to":"bob@us","reason":"no_such_user"}`, nil},
		{`{"id":"7211938138472448001","from":"alice@eu","to":"bob@us","reason":"forbidden"}`, nil},
		{`{"id":"7211938138472448001","from":"alice@eu","to":"bob@us","reason":"bored"}`, wire.ErrInvalid},
		{`{"id":"0","from":"alice@eu","to":"bob@us","reason":"invalid"}`, wire.ErrInvalid},
		{`{"id":"7211938138472448001","from":"alice","to":"bob@us","reason":"invalid"}`, wire.ErrForbidden},
		{`{"id":"7211938138472448001","from":"alice@us","to":"bob@us","reason":"invalid"}`, wire.ErrForbidden},
		{`{"id":"7211938138472448001","from":"alice@eu","to":"bob@asia","reason":"invalid"}`, wire.ErrForbidden}, // not to the link's region
		{`{"id":"7211938138472448001","from":"alice@eu","to":"bob","reason":"invalid"}`, wire.ErrForbidden},
		{`"x"`, wire.ErrInvalid},
		// A message of alice to a group of us (its home).
		{`{"id":"7211938138472448001","from":"alice@eu","group":"k3x9@us","reason":"forbidden"}`, nil},
		{`{"id":"7211938138472448001","from":"alice@eu","group":"k3x9@asia","reason":"forbidden"}`, wire.ErrForbidden}, // not a group of the link's region
		{`{"id":"7211938138472448001","from":"alice@eu","group":"k3x9","reason":"forbidden"}`, wire.ErrForbidden},
		{`{"id":"7211938138472448001","from":"alice@eu","group":"k3x9@us","to":"bob@us","reason":"forbidden"}`, wire.ErrForbidden},
		{`{"id":"7211938138472448001","from":"bob@us","group":"k3x9@us","reason":"forbidden"}`, wire.ErrForbidden},
	} {
		n, from, err := parseNotice([]byte(c.p), "us", "eu")
		switch {
		case c.want == nil && (err != nil || from != "alice" || n.To != "bob@us" && n.Group != "k3x9@us"):
			t.Errorf("%s: %+v %q %v", c.p, n, from, err)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", c.p, err, c.want)
		}
	}
}

// Relations and notices in the outbox go on the link as batch frames of
// their kind, in order with the messages.
func TestNoticesInBatches(t *testing.T) {
	rel := append([]byte{relMark}, mustJSON(relationFrame{Kind: "block", Owner: "alice", UID: "bob@us", Add: true, At: time.Unix(1, 0).UTC()})...)
	notice := append([]byte{noticeMark}, `{"id":"1","from":"bob@us","to":"alice@eu","reason":"forbidden"}`...)
	var entries []outgoing
	for i, e := range [][]byte{rel, notice} {
		topic, p, kind, err := linkPayload(e, "eu", 0)
		want := e[1:]
		if i == 0 {
			want = bytes.Replace(want, []byte(`"alice"`), []byte(`"alice@eu"`), 1) // qualified on the way out
		}
		if err != nil || topic != BatchTopic("eu") || !json.Valid(p) || !bytes.Equal(p, want) {
			t.Fatalf("%q: %s %q %s %v", e, topic, p, kind, err)
		}
		entries = append(entries, outgoing{pos: uint64(i), kind: kind, payload: p})
	}
	_, payloads, _ := batches(entries)
	fs, err := parseBatch(payloads[0])
	if err != nil || len(fs) != 2 || fs[0].Kind != frameRel || fs[1].Kind != frameUndeliverable {
		t.Fatalf("%s: %+v %v", payloads[0], fs, err)
	}
	if _, ok := messageTime(rel); ok {
		t.Fatal("a relation would expire with --link-retention")
	}
}

func TestNoticeCmd(t *testing.T) {
	c := noticeCmd{Region: "eu", Entry: []byte{noticeMark, '{', '}'}}
	got, err := decodeNoticeCmd(c.encode())
	if err != nil || got.Region != "eu" || !bytes.Equal(got.Entry, c.Entry) {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range []noticeCmd{{Region: "e/u", Entry: c.Entry}, {Region: "eu", Entry: []byte{relMark, '{'}}, {Region: "eu"}} {
		if _, err := decodeNoticeCmd(bad.encode()); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func FuzzParseRelation(f *testing.F) {
	f.Add([]byte(`{"kind":"block","owner":"alice@eu","uid":"bob@us","add":true,"at":"2026-12-04T10:00:00Z"}`))
	f.Add([]byte(`{"kind":"contact","owner":"alice@eu","uid":"bob@us"}`))
	f.Add([]byte(`{"kind":"block","owner":"alice@eu@x","uid":"@us"}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		r, uid, err := parseRelation(p, "eu", "us")
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) && !errors.Is(err, wire.ErrForbidden) {
				t.Fatal(err)
			}
			return
		}
		o, oerr := address.Parse(r.Owner)
		if oerr != nil || o.Region != "eu" || wire.ValidUserID(o.Name) != nil || wire.ValidUserID(uid) != nil || r.Kind != "contact" && r.Kind != "block" {
			t.Fatalf("accepted %+v %q", r, uid)
		}
	})
}

func FuzzParseNotice(f *testing.F) {
	f.Add([]byte(`{"id":"7211938138472448001","from":"alice@eu","to":"bob@us","reason":"no_such_user"}`))
	f.Add([]byte(`{"id":7,"from":"alice@eu","to":"bob@us@x","reason":"forbidden"}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		n, from, err := parseNotice(p, "us", "eu")
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) && !errors.Is(err, wire.ErrForbidden) {
				t.Fatal(err)
			}
			return
		}
		if n.Group != "" {
			if n.ID == 0 || wire.ValidUserID(from) != nil || n.To != "" || address.RegionOf(n.Group) != "us" || wire.ValidGroupID(n.Group) != nil {
				t.Fatalf("accepted %+v %q", n, from)
			}
			return
		}
		to, terr := address.Parse(n.To)
		if n.ID == 0 || wire.ValidUserID(from) != nil || terr != nil || to.Region != "us" || wire.ValidUserID(to.Name) != nil {
			t.Fatalf("accepted %+v %q", n, from)
		}
	})
}

func FuzzDecodeNoticeCmd(f *testing.F) {
	f.Add(noticeCmd{Region: "eu", Entry: []byte(`U{"id":"1"}`)}.encode())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, p []byte) {
		c, err := decodeNoticeCmd(p)
		if err != nil {
			return
		}
		if address.ValidRegion(c.Region) != nil || len(c.Entry) < 2 || c.Entry[0] != noticeMark {
			t.Fatalf("accepted %+v", c)
		}
		if again, err := decodeNoticeCmd(c.encode()); err != nil || again.Region != c.Region || !bytes.Equal(again.Entry, c.Entry) {
			t.Fatalf("round trip %+v: %+v %v", c, again, err)
		}
	})
}
