package archive

import (
	"errors"
	"net/http"
	"reflect"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// FuzzSendRequest checks the POST /chat/messages decoder: it never
// panics, refuses only with a 400 *httpapi.Error, and whatever it accepts
// has exactly one valid target (a recipient or a group) and an envelope that wire.ParseEnvelope accepts
// unchanged. Seeds are in testdata/fuzz/FuzzSendRequest.
func FuzzSendRequest(f *testing.F) {
	f.Add([]byte(`{"to":"bob","cid":"c-1","type":"text","body":"hello"}`))
	f.Add([]byte(`{"group":"k3v9x0q2m7a1b4c8","cid":"c-1","type":"text","body":"hello"}`))
	f.Add([]byte(`{"group":"g","cid":"c-2","type":"text","body":"@bob hi","mentions":["Carol","carol"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		dst, env, err := decodeSendRequest(body)
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
				t.Fatalf("refusal %v is not a 400 *httpapi.Error", err)
			}
			return
		}
		switch {
		case dst.To != "" && dst.Group != "":
			t.Fatalf("accepted both a recipient and a group: %+v", dst)
		case dst.To != "" && wire.ValidUserID(dst.To) != nil:
			t.Fatalf("accepted recipient %q", dst.To)
		case dst.Group != "" && wire.ValidGroupID(dst.Group) != nil:
			t.Fatalf("accepted group %q", dst.Group)
		case dst.To == "" && dst.Group == "":
			t.Fatalf("accepted no target")
		}
		if env.ID != 0 || env.From != "" || env.To != "" || env.Group != "" {
			t.Fatalf("server-owned fields set: %+v", env)
		}
		again, err := wire.ParseEnvelope(env.Marshal())
		if err != nil {
			t.Fatalf("accepted envelope %+v does not parse again: %v", env, err)
		}
		if !reflect.DeepEqual(again, env) {
			t.Fatalf("round trip changed the envelope: %+v → %+v", env, again)
		}
	})
}

// FuzzDecodeMsgCmd: any payload decodes or is refused without a panic,
// and what decodes encodes back to the same command (the names are read
// as substrings of one string, see reader.strs).
func FuzzDecodeMsgCmd(f *testing.F) {
	for _, c := range []msgCmd{
		{ID: 1, From: "alice", To: "bob", CID: "c1", Payload: []byte(`{"x":1}`)},
		{ID: 1 << 40, From: "u", Group: "team", CID: "x", Payload: []byte("p")},
		{ID: 7, From: "me", To: "me", CID: "self", Payload: []byte("{}")},
	} {
		f.Add(c.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeMsgCmd(b)
		if err != nil {
			return
		}
		again, err := decodeMsgCmd(c.encode())
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", c, err)
		}
		if again.ID != c.ID || again.From != c.From || again.To != c.To || again.Group != c.Group ||
			again.CID != c.CID || string(again.Payload) != string(c.Payload) {
			t.Fatalf("round trip %+v != %+v", again, c)
		}
	})
}

// FuzzConvCursor checks the conversation list's cursor parser (the
// cursor query parameter): it never panics, refuses only with a 400
// *httpapi.Error, and what it accepts writes back as a cursor that
// parses to the same place.
func FuzzConvCursor(f *testing.F) {
	f.Add("1234.dbob")
	f.Add("0.gk3v9x0q2m7a1b4c8")
	f.Add("18446744073709551615.dalice@eu")
	f.Add(".d")
	f.Fuzz(func(t *testing.T, v string) {
		c, err := parseConvCursor(v)
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
				t.Fatalf("refusal %v is not a 400 *httpapi.Error", err)
			}
			return
		}
		again, err := parseConvCursor(c.String())
		if err != nil || again != c {
			t.Fatalf("%q: %+v written as %q parses to %+v, %v", v, c, c.String(), again, err)
		}
	})
}
