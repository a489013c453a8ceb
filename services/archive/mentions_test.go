package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// The server completes an envelope's mentions when it stores it: the
// client's list first, then the users the body's @tokens name, each
// once, at most wire.MaxMentions; the stored and delivered bytes carry
// them.
func TestSendStampsMentions(t *testing.T) {
	e := newEnv(t, withGroups())
	ctx := context.Background()
	e.groups.add("team", "alice", "bob", "carol")
	many := make([]string, 0, wire.MaxMentions+10)
	for i := range cap(many) {
		many = append(many, fmt.Sprintf("@user%02d", i))
	}
	withMentions := func(env wire.Envelope, uids ...string) wire.Envelope { env.Mentions = uids; return env }
	tests := []struct {
		name  string
		group bool
		env   wire.Envelope
		want  []string
	}{
		{"none", false, text("c-0", "hello"), nil},
		{"body only", false, text("c-1", "@bob hi"), []string{"bob"}},
		{"client's list first", true, withMentions(text("c-2", "@Bob and @carol"), "dave", "carol"), []string{"dave", "carol", "bob"}},
		// "carol." is a valid user ID: the scanner cannot tell a full stop from part of the name.
		{"sentence end", false, text("c-2b", "thanks @carol."), []string{"carol.", "carol"}},
		{"client's list only", true, withMentions(text("c-3", "hi"), "dave"), []string{"dave"}},
		{"an address is not a mention", false, text("c-4", "mail bob@carol.example"), nil},
		// bob@us is a user of another region: not this region's bob.
		{"a user of another region is not ours", true, text("c-4b", "@bob@us and @carol, see this"), []string{"carol"}},
		{"capped", true, text("c-5", strings.Join(many, " ")), func() []string {
			var w []string
			for _, m := range many[:wire.MaxMentions] {
				w = append(w, m[1:])
			}
			return w
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stored wire.Envelope
			var payload []byte
			var err error
			if tt.group {
				stored, payload, _, err = e.svc.SendGroup(ctx, "alice", "team", tt.env)
			} else {
				stored, payload, _, err = e.svc.SendDirect(ctx, "alice", "bob", tt.env)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(stored.Mentions, tt.want) {
				t.Fatalf("stored mentions %q, want %q", stored.Mentions, tt.want)
			}
			var onWire wire.Envelope
			if err := json.Unmarshal(payload, &onWire); err != nil || !slices.Equal(onWire.Mentions, tt.want) {
				t.Fatalf("payload %s: %v", payload, err)
			}
			if tt.want == nil && bytes.Contains(payload, []byte(`"mentions"`)) {
				t.Fatalf("payload %s has an empty mentions list", payload)
			}
		})
	}
	// The stored bytes are what history serves.
	hist, _, err := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 10)
	if err != nil || !slices.ContainsFunc(hist, func(b []byte) bool { return bytes.Contains(b, []byte(`"body":"@bob hi","mentions":["bob"]`)) }) {
		t.Fatalf("history %q, %v", hist, err)
	}
}

// A caller that skipped wire.ParseEnvelope cannot store mentions that
// are not user IDs, or too many.
func TestSendRefusesBadMentions(t *testing.T) {
	e := newEnv(t, withGroups())
	ctx := context.Background()
	e.groups.add("team", "alice", "bob")
	tooMany := make([]string, wire.MaxMentions+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("user%02d", i)
	}
	for _, mentions := range [][]string{{"Bob"}, {"a/b"}, {""}, tooMany} {
		env := text("c", "hi")
		env.Mentions = mentions
		if _, _, _, err := e.svc.SendDirect(ctx, "alice", "bob", env); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("SendDirect with mentions %q: %v", mentions, err)
		}
		if _, _, _, err := e.svc.SendGroup(ctx, "alice", "team", env); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("SendGroup with mentions %q: %v", mentions, err)
		}
	}
	if d := dump(t, e.db); len(d) != 0 {
		t.Fatalf("refusals stored %v", d)
	}
}

func TestHTTPSendMentions(t *testing.T) {
	e := newEnv(t)
	srv := e.server(t)
	before := dump(t, e.db)
	if r := postJSON(t, srv, "alice", `{"to":"bob","cid":"c0","type":"text","body":"x","mentions":["bob","a b"]}`); r.Status != http.StatusBadRequest || r.code() != CodeInvalidEnvelope {
		t.Fatalf("bad mention: %d %s", r.Status, r.Body)
	}
	if !maps.Equal(before, dump(t, e.db)) {
		t.Fatal("a refused message changed the state")
	}
	r := postJSON(t, srv, "alice", `{"to":"bob","cid":"c1","type":"text","body":"hey @carol","mentions":["Bob","bob"]}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var got wire.Envelope
	if err := json.Unmarshal(r.Body, &got); err != nil || !slices.Equal(got.Mentions, []string{"bob", "carol"}) {
		t.Fatalf("response %s: %v", r.Body, err)
	}
	for _, p := range e.pub.published() {
		if !bytes.Equal(p.Payload, r.Body) {
			t.Fatalf("delivered %s, stored %s", p.Payload, r.Body)
		}
	}
}
