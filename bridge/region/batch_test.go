package region_test

import (
	"fmt"
	"testing"
)

// A batch commits its good messages in order and skips the ones refused
// for good (counted); sent again, it delivers nothing twice; a batch that
// is not one is refused whole (0x99).
func TestBatchSkipsRefusedKeepsOrder(t *testing.T) {
	_, us := startRegions(t, 1, "eu", "us", nil)
	bobTok := us.newUser(t, "bob")
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")
	link := mqttLinkAsEU(t, us)
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

// Group traffic of a link is checked like direct messages: a sender of a
// third region or of the receiving region, a group the link's region
// does not hold, a state that is not one are refused and counted.
func TestGroupLinkSpoofingRefused(t *testing.T) {
	_, us := startRegions(t, 1, "eu", "us", nil)
	us.newUser(t, "bob")
	link := mqttLinkAsEU(t, us)
	gm := func(from, group string) string {
		return fmt.Sprintf(`{"id":"7211938138472448009","from":%q,"group":%q,"cid":"c","type":"text","body":"x"}`, from, group)
	}
	for _, tc := range []struct {
		topic, payload string
		want           byte
	}{
		{"$link/eu/gmsg", gm("mallory@asia", "g1@us"), 0x87}, // our group: only eu's users through eu
		{"$link/eu/gmsg", gm("bob@us", "g1@eu"), 0x87},       // our own user sent back
		{"$link/eu/gmsg", gm("alice@eu", "g1@asia"), 0x87},   // asia's group: asia relays
		{"$link/eu/gmsg", gm("alice@eu", "g1@us"), 0x87},     // no such group here: not a member
		{"$link/eu/gmsg", gm("alice@eu", "g1@eu"), 0x87},     // no mirror of g1 here
		{"$link/eu/group", `{"group":{"groupId":"g1@asia"},"members":[]}`, 0x99},
		{"$link/eu/presence", `{}`, 0x99},
	} {
		if code, ack := link.Pub(t, tc.topic, 1, tc.payload); code != tc.want {
			t.Errorf("%s %s: %#x %q, want %#x", tc.topic, tc.payload, code, ack.Properties.ReasonString, tc.want)
		}
	}
	if v := counter(t, us.nodes[0], "edgechat_region_link_received_total", `result="forged"`); v != 3 {
		t.Fatalf("forged counted %v, want 3", v)
	}
}
