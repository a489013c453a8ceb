package archive

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// batchWith is a Proposer that, once armed, puts the next message
// command and extra into ONE Raft entry, as the cluster's batching
// proposer does with commands that arrive together.
type batchWith struct {
	inner Proposer
	e     *env
	extra *fsm.Command
}

func (b *batchWith) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if b.extra == nil || t != wire.CmdMessage {
		return b.inner.Propose(ctx, t, payload)
	}
	extra := *b.extra
	b.extra = nil
	idx := b.e.prop.Index() + 1
	l := &raft.Log{Index: idx, Type: raft.LogCommand, AppendedAt: time.Now(),
		Data: fsm.EncodeBatch([]fsm.Command{{Type: t, Payload: payload}, extra})}
	res := b.e.f.Apply(l).([]fsm.Result)
	b.e.prop.SetIndex(idx)
	if res[1].Err != nil {
		return nil, fmt.Errorf("extra command: %w", res[1].Err)
	}
	return res[0].Value, res[0].Err
}

// A retention command that shares a Raft entry with a message of the
// same conversation leaves the summary cache with what retention wrote:
// before, the message's AfterCommit put its pre-retention summary back
// after retention's write, and the next message built on it (the expired
// unread messages counted again, and only on nodes whose cache was warm).
func TestRetentionInTheEntryOfAMessageLeavesTheSummaryCacheCurrent(t *testing.T) {
	bw := &batchWith{}
	ids := &seqIDs{next: 1 << 30, step: 1}
	e := newEnv(t, withIDs(ids), func(e *env) { e.wrapProp = func(p Proposer) Proposer { bw.inner = p; return bw } })
	bw.e = e
	for i := range 5 { // old messages, unread by bob
		e.send(t, "alice", "bob", fmt.Sprintf("old%d", i))
	}
	now := time.Now()
	conv := directConv("alice", "bob")
	cutoff := RetentionPolicy{Days: 1}.cutoffFor(conv, now)
	ids.mu.Lock()
	ids.next = int64(snowflake.Make(uint64(now.Sub(snowflake.Epoch).Milliseconds()), 1, 0))
	ids.mu.Unlock()

	cmd := retentionCmd{Conv: conv, Cutoff: cutoff}
	bw.extra = &fsm.Command{Type: wire.CmdRetention, Payload: cmd.encode()}
	e.send(t, "alice", "bob", "new1") // applied in one entry with the retention
	unreadOf := func() int {
		convs, _, err := e.svc.conversations(context.Background(), "bob", 10)
		if err != nil || len(convs) != 1 {
			t.Fatalf("conversations: %+v %v", convs, err)
		}
		return convs[0].Unread
	}
	if n := unreadOf(); n != 1 {
		t.Fatalf("after the entry: bob has %d unread, want 1", n)
	}
	e.send(t, "alice", "bob", "new2")
	if n := unreadOf(); n != 2 {
		t.Fatalf("after one more message: bob has %d unread, want 2 (the 5 expired messages count again)", n)
	}
}

// The same for the command that corrects unread counts for sealed
// expiring messages (CmdRetentionRefs).
func TestRetentionRefsInTheEntryOfAMessageLeavesTheSummaryCacheCurrent(t *testing.T) {
	bw := &batchWith{}
	ids := &seqIDs{next: 1 << 30, step: 1}
	segs, _ := localSegments(t, false)
	e := newEnv(t, withIDs(ids), withSegments(segs), func(e *env) { e.wrapProp = func(p Proposer) Proposer { bw.inner = p; return bw } })
	bw.e = e
	var refs []expiringRef
	for i := range 5 { // old messages, unread by bob; all but the newest get sealed
		m := e.send(t, "alice", "bob", fmt.Sprintf("old%d", i))
		if i < 4 {
			refs = append(refs, expiringRef{ID: m.ID, Sealed: true, From: "alice", CID: fmt.Sprintf("old%d", i)})
		}
	}
	if st, err := e.svc.SealOnce(context.Background(), SealConfig{}, time.Now()); err != nil || st.Messages != 4 {
		t.Fatalf("SealOnce = %+v, %v; want 4 sealed", st, err)
	}
	now := time.Now()
	conv := directConv("alice", "bob")
	ids.mu.Lock()
	ids.next = int64(snowflake.Make(uint64(now.Sub(snowflake.Epoch).Milliseconds()), 1, 0))
	ids.mu.Unlock()

	cmd := retentionRefsCmd{Conv: conv, Cutoff: RetentionPolicy{Days: 1}.cutoffFor(conv, now), Refs: refs}
	bw.extra = &fsm.Command{Type: wire.CmdRetentionRefs, Payload: cmd.encode()}
	e.send(t, "alice", "bob", "new1") // applied in one entry with the refs command
	unreadOf := func() int {
		convs, _, err := e.svc.conversations(context.Background(), "bob", 10)
		if err != nil || len(convs) != 1 {
			t.Fatalf("conversations: %+v %v", convs, err)
		}
		return convs[0].Unread
	}
	if n := unreadOf(); n != 2 {
		t.Fatalf("after the entry: bob has %d unread, want 2 (1 old hot, 1 new)", n)
	}
	e.send(t, "alice", "bob", "new2")
	if n := unreadOf(); n != 3 {
		t.Fatalf("after one more message: bob has %d unread, want 3 (the 4 expired sealed messages count again)", n)
	}
}
