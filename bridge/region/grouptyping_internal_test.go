package region

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

func TestTranslateGroupTyping(t *testing.T) {
	regions := func(gid string) ([]string, error) {
		if gid == "g1" {
			return []string{"asia", "us"}, nil
		}
		return nil, nil
	}
	for _, c := range []struct {
		name, link, gid, payload string
		topic, out, local        string
		relay                    []string
		err                      error
	}{
		{name: "home member to our mirror", link: "eu", gid: "g9", payload: `{"state":"typing","from":"alice"}`,
			topic: "group/g9@eu/typing", out: `{"state":"typing","from":"alice@eu"}`},
		{name: "a third region's member relayed by the home", link: "eu", gid: "g9", payload: `{"state":"stopped","from":"carol@asia"}`,
			topic: "group/g9@eu/typing", out: `{"state":"stopped","from":"carol@asia"}`},
		{name: "our own user sent back", link: "eu", gid: "g9", payload: `{"state":"typing","from":"bob@us"}`, err: wire.ErrInvalid},
		{name: "a member of us in our group", link: "us", gid: "g1@eu", payload: `{"state":"typing","from":"bob"}`,
			topic: "group/g1/typing", out: `{"state":"typing","from":"bob@us"}`, local: "g1", relay: []string{"asia", "us"}},
		{name: "our group, no member in that region", link: "us", gid: "g2@eu", payload: `{"state":"typing","from":"bob"}`, err: wire.ErrForbidden},
		{name: "our group, a relayed sender", link: "us", gid: "g1@eu", payload: `{"state":"typing","from":"carol@asia"}`, err: wire.ErrInvalid},
		{name: "a third region's group", link: "us", gid: "g1@asia", payload: `{"state":"typing","from":"bob"}`, err: wire.ErrInvalid},
		{name: "bad state", link: "us", gid: "g1@eu", payload: `{"state":"dancing","from":"bob"}`, err: wire.ErrInvalid},
		{name: "no sender", link: "us", gid: "g1@eu", payload: `{"state":"typing"}`, err: wire.ErrInvalid},
		{name: "bad group", link: "eu", gid: "a/b", payload: `{"state":"typing","from":"alice"}`, err: wire.ErrInvalid},
		{name: "not JSON", link: "eu", gid: "g9", payload: `typing`, err: wire.ErrInvalid},
	} {
		own := "eu"
		if c.link == "eu" { // as us receives it from eu
			own = "us"
		}
		out, local, relay, err := translateGroupTyping(own, c.link, c.gid, []byte(c.payload), regions)
		if c.err != nil {
			if !errors.Is(err, c.err) || out.Topic != "" {
				t.Errorf("%s: %+v, %v; want %v", c.name, out, err, c.err)
			}
			continue
		}
		if err != nil || out.Topic != c.topic || string(out.Payload) != c.out || local != c.local || !slices.Equal(relay, c.relay) {
			t.Errorf("%s: %s %s %q %v, %v", c.name, out.Topic, out.Payload, local, relay, err)
		}
	}
}

// FuzzTranslateGroupTyping: whatever a link delivers, the result is an
// error or a group typing topic of this region with a valid payload.
func FuzzTranslateGroupTyping(f *testing.F) {
	f.Add("eu", "g9", []byte(`{"state":"typing","from":"alice"}`))
	f.Add("us", "g1@eu", []byte(`{"state":"stopped","from":"bob"}`))
	f.Add("eu", "g9", []byte(`{"state":"typing","from":"carol@asia"}`))
	f.Add("eu", "g9@x", []byte(`{"from":"@"}`))
	regions := func(string) ([]string, error) { return []string{"us"}, nil }
	f.Fuzz(func(t *testing.T, link, gid string, payload []byte) {
		out, _, _, err := translateGroupTyping("eu", link, gid, payload, regions)
		if err != nil {
			return
		}
		k := wire.ParseTopic(out.Topic)
		if k.Kind != wire.KindGroupTyping {
			t.Fatalf("%q %q %q: topic %q", link, gid, payload, out.Topic)
		}
		var v wire.Typing
		if jsonErr := json.Unmarshal(out.Payload, &v); jsonErr != nil || v.From == "" {
			t.Fatalf("payload %q", out.Payload)
		}
	})
}
