package archive

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkSendDirect measures stamping, encoding and applying one
// message through a real FSM and Badger (one command per entry).
func BenchmarkSendDirect(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, _, _, err := e.svc.SendDirect(ctx, "alice", "bob", text("b"+strconv.Itoa(i), "hello there")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSyncPage measures reading a full sync page of 500 messages.
func BenchmarkSyncPage(b *testing.B) {
	e := newEnv(b, withBatch(1))
	for i := range 1000 {
		e.send(b, "alice", "bob", "s"+strconv.Itoa(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		msgs, _, _, err := e.svc.syncPage(context.Background(), "bob", 0, syncDefault)
		if err != nil || len(msgs) != syncDefault {
			b.Fatal(len(msgs), err)
		}
	}
}

// BenchmarkSendGroup measures one message to a 10,000-member group: the
// cost must match a direct message's (no per-member writes).
func BenchmarkSendGroup(b *testing.B) {
	e := newEnv(b, withGroupsDep(bigGroups{n: 10_000}))
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, _, _, err := e.svc.SendGroup(ctx, "user1", "big", text("b"+strconv.Itoa(i), "hello there")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSyncPageGroups measures a full sync page merged from a user's
// direct messages and 20 active groups.
func BenchmarkSyncPageGroups(b *testing.B) {
	e := newEnv(b, withGroups())
	for g := range 20 {
		e.groups.add("g"+strconv.Itoa(g), "alice", "bob")
	}
	for i := range 1000 {
		if i%3 == 0 {
			e.send(b, "alice", "bob", "s"+strconv.Itoa(i))
			continue
		}
		e.sendGroup(b, "alice", "g"+strconv.Itoa(i%20), "s"+strconv.Itoa(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		msgs, _, _, err := e.svc.syncPage(context.Background(), "bob", 0, syncDefault)
		if err != nil || len(msgs) != syncDefault {
			b.Fatal(len(msgs), err)
		}
	}
}
