package broker

import (
	"errors"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// RestoreRetained (a restarted node taking back the presence copies it
// lost) retains a copy where nothing is retained, delivers it to the
// subscribers there, never puts it over what is retained already (a
// newer status), and restores presence only.
func TestRestoreRetainedOnlyWhereNothingIsRetained(t *testing.T) {
	e := startBroker(t, nil)
	alice := mustV5(t, e.addr, "alice", "phone")
	if r := alice.Sub(t, "presence/bob"); r[0] > 2 {
		t.Fatalf("subscribe presence/bob: %#x", r[0])
	}
	if err := e.b.RestoreRetained("presence/bob", []byte(`{"status":"online"}`)); err != nil {
		t.Fatal(err)
	}
	if m := alice.Next(t); string(m.Payload) != `{"status":"online"}` {
		t.Fatalf("the subscriber got %q", m.Payload)
	}
	if err := e.b.Publish(wire.Outbound{Topic: "presence/bob", Payload: []byte(`{"status":"offline"}`), Retain: true, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RestoreRetained("presence/bob", []byte(`{"status":"online"}`)); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.b.Retained("presence/bob"); string(p) != `{"status":"offline"}` {
		t.Fatalf("retained after restoring an older copy: %q", p)
	}
	if err := e.b.RestoreRetained("user/bob/newMessage", []byte(`{}`)); !errors.Is(err, ErrInvalidTopic) {
		t.Fatalf("restoring a chat topic: %v", err)
	}
	if _, ok := e.b.Retained("user/bob/newMessage"); ok {
		t.Fatal("a chat topic was retained")
	}
}
