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
		msgs, _, _, err := e.svc.syncPage("bob", 0, syncDefault)
		if err != nil || len(msgs) != syncDefault {
			b.Fatal(len(msgs), err)
		}
	}
}
