package region_test

import (
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// A batch commits its good messages in order and skips the ones refused
// for good (counted); sent again, it delivers nothing twice; a batch that
// is not one is refused whole (0x99).
func TestBatchSkipsRefusedKeepsOrder(t *testing.T) {
	_, us := startRegions(t, 1, "eu", "us", nil)
	bobTok := us.newUser(t, "bob")
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")
	link := mqtttest.MustDial(t, us.nodes[0].MQTTAddr(), mqtttest.Options{ClientID: "$link/eu", Username: "$link/eu", Password: secret})
	msg := func(id, from, to string) string {
		return fmt.Sprintf(`{"k":"dm","p":{"id":%q,"from":%q,"to":%q,"cid":"c%s","type":"text","body":"b%s"}}`, id, from, to, id, id)
	}
	batch := "[" + msg("7211938138472448001", "alice@eu", "bob@us") + "," +
		msg("7211938138472448002", "mallory@asia", "bob@us") + "," + // forged
		msg("7211938138472448003", "alice@eu", "nobody@us") + "," + // no such user
		msg("7211938138472448004", "alice@eu", "bob@us") + "]"
	for range 2 {
		if code, ack := link.Pub(t, "$link/eu/batch", 1, batch); code != 0 {
			t.Fatalf("batch: %#x %q", code, ack.Properties.ReasonString)
		}
	}
	for _, want := range []string{"7211938138472448001", "7211938138472448004"} {
		if e := decode(t, bob.Next(t).Payload); e.ID != want || e.From != "alice@eu" {
			t.Fatalf("bob got %+v, want %s", e, want)
		}
	}
	if m, ok := bob.TryNext(); ok {
		t.Fatalf("bob got a second delivery: %s", m.Payload)
	}
	if v := counter(t, us.nodes[0], "edgechat_region_link_received_total", `result="forged"`); v != 2 {
		t.Fatalf("forged counted %v, want 2 (once per sending)", v)
	}
	if v := counter(t, us.nodes[0], "edgechat_region_link_received_total", `result="duplicate"`); v != 2 {
		t.Fatalf("duplicates counted %v, want 2", v)
	}
	for _, bad := range []string{`{}`, `[{"k":"presence","p":{}}]`, `[{"k":"dm"}]`, `not json`} {
		if code, _ := link.Pub(t, "$link/eu/batch", 1, bad); code != 0x99 {
			t.Errorf("batch %s: %#x, want 0x99", bad, code)
		}
	}
}
