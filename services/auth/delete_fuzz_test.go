package auth

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// FuzzDecodeDelete feeds arbitrary bodies to the decoder of DELETE
// /user/me: a 4xx httpapi.Error or a request that survives a round trip.
func FuzzDecodeDelete(f *testing.F) {
	f.Add([]byte(`{"password":"password1"}`))
	f.Add([]byte(`{"password":"x","extra":1}`))
	f.Add([]byte(`{"password":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeDelete(body)
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status < 400 || he.Status > 499 || he.Code == "" {
				t.Fatalf("decoder error is not a 4xx httpapi.Error: %#v", err)
			}
			return
		}
		b, _ := json.Marshal(req)
		if again, err := decodeDelete(b); err != nil || again != req {
			t.Fatalf("round trip: %+v -> %+v (%v)", req, again, err)
		}
	})
}

// FuzzAccountCommands applies arbitrary payloads as the two replicated
// account-deletion commands: each is refused or applied, never a panic,
// and a refused one changes nothing.
func FuzzAccountCommands(f *testing.F) {
	f.Add(false, []byte(`{"v":1,"uid":"bob","at":"2026-03-01T12:00:00Z","deleteAt":"2026-03-01T12:00:00Z"}`))
	f.Add(true, []byte(`{"v":1,"uid":"bob","at":"2026-03-01T12:00:00Z"}`))
	f.Add(true, []byte(`{"v":2,"uid":"bob"}`))
	f.Add(false, []byte(`{"v":1,"uid":"bob","at":"2026-03-01T12:00:00Z","deleteAt":"2020-01-01T00:00:00Z"}`))
	f.Add(false, []byte(`{"v":1,"uid":"nobody","at":"2026-03-01T12:00:00Z","deleteAt":"2026-03-01T12:00:00Z"}`))
	f.Fuzz(func(t *testing.T, erase bool, payload []byte) {
		e := newEnv(t)
		e.register("bob", "bob-password")
		if erase { // an account being deleted, due
			if _, err := e.svc.DeleteAccount(context.Background(), "bob", "bob-password", "192.0.2.1"); err != nil {
				t.Fatal(err)
			}
		}
		cmd := wire.CmdAccountDelete
		if erase {
			cmd = wire.CmdAccountErase
		}
		before := fsmtest.Dump(t, e.db, "r/")
		if _, err := e.prop.Propose(context.Background(), cmd, payload); err != nil {
			if after := fsmtest.Dump(t, e.db, "r/"); !maps.Equal(before, after) {
				t.Fatalf("a refused command changed the state: %v", err)
			}
		}
	})
}
