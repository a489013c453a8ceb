package archive

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// delivered lists the live deliveries (ScopeLocal) recorded so far as
// "topic id from" lines, checking each carries the stored envelope.
func delivered(t *testing.T, e *env) []string {
	t.Helper()
	var out []string
	for _, o := range e.pub.published() {
		if o.Scope != wire.ScopeLocal {
			continue
		}
		var m struct{ ID, From string }
		if err := json.Unmarshal(o.Payload, &m); err != nil {
			t.Fatalf("delivered payload %q: %v", o.Payload, err)
		}
		if o.QoS != 1 || len(o.UserProps) != 2 || o.UserProps[0] != (wire.Prop{Key: "id", Value: m.ID}) || o.UserProps[1] != (wire.Prop{Key: "from", Value: m.From}) {
			t.Fatalf("delivery %+v: want QoS 1 and properties id %s, from %s", o, m.ID, m.From)
		}
		out = append(out, o.Topic+" "+m.ID+" "+m.From)
	}
	return out
}

func TestStoredMessagesAreDeliveredLiveOnceCommitted(t *testing.T) {
	e := newEnv(t, withGroups(), withLive())
	e.groups.add("g1", "alice", "bob")
	dm := e.send(t, "alice", "bob", "c1")
	self := e.send(t, "alice", "alice", "c2")
	gm := e.sendGroup(t, "bob", "g1", "c3")
	// A retry stores nothing and delivers nothing.
	if _, _, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", text("c1", "again")); err != nil || !dup {
		t.Fatalf("retry: dup %v, %v", dup, err)
	}
	want := []string{
		"user/bob/newMessage " + dm.ID.String() + " alice",
		"user/alice/newMessage " + dm.ID.String() + " alice",
		"user/alice/newMessage " + self.ID.String() + " alice",
		"group/g1/newMessage " + gm.ID.String() + " bob",
	}
	if got := delivered(t, e); !slices.Equal(got, want) {
		t.Fatalf("live deliveries:\n%q\nwant\n%q", got, want)
	}
	if n := len(e.pub.published()); n != len(want) {
		t.Fatalf("%d publishes, want only the %d live deliveries (sending over MQTT delivers nothing else)", n, len(want))
	}
	if n := count(t, e.svc.st.live.m.handed); n != 3 {
		t.Fatalf("handed = %v, want 3", n)
	}
}

// A message appended before the node started is history (read by sync),
// not news: applying it, as a restarted node catching up does, delivers
// nothing. So is one whose append time is unknown.
func TestMessagesAppendedBeforeTheNodeStartedAreNotDeliveredLive(t *testing.T) {
	e := newEnv(t, withLive())
	var ids []snowflake.ID
	for i, appended := range []time.Time{time.Now().Add(-time.Minute), {}} {
		c := msgCmd{ID: e.ids.Next(), From: "alice", To: "bob", CID: "old" + string(rune('a'+i)), Payload: []byte(`{"id":"1","from":"alice","to":"bob"}`)}
		l := &raft.Log{Index: e.prop.Index() + 1 + uint64(i), Type: raft.LogCommand, AppendedAt: appended,
			Data: fsm.EncodeBatch([]fsm.Command{{Type: wire.CmdMessage, Payload: c.encode()}})}
		if res := e.f.Apply(l).([]fsm.Result); res[0].Err != nil {
			t.Fatalf("apply: %v", res[0].Err)
		}
		ids = append(ids, c.ID)
	}
	if got := delivered(t, e); len(got) != 0 {
		t.Fatalf("old messages delivered live: %q", got)
	}
	if n := count(t, e.svc.st.live.m.stale); n != 2 {
		t.Fatalf("skipped = %v, want 2", n)
	}
	for _, id := range ids { // stored all the same
		if _, ok, err := e.svc.MessageIn(id, "alice", "bob", ""); !ok || err != nil {
			t.Fatalf("message %d not stored: %v", id, err)
		}
	}
}

// A message sent over HTTP is delivered live from the apply like any
// other; the sending node only forwards it to nodes of an earlier
// version (ScopeOlderPeers), on the same topics.
func TestHTTPSendLeavesLiveDeliveryToTheApply(t *testing.T) {
	e := newEnv(t, withLive())
	srv := e.server(t)
	r := do(t, srv, "alice", "POST", "/chat/messages", "application/json", []byte(`{"to":"bob","cid":"h1","type":"text","body":"hi"}`))
	if r.Status != 201 {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var older []string
	for _, o := range e.pub.published() {
		if o.Scope == wire.ScopeOlderPeers {
			older = append(older, o.Topic)
		}
	}
	if want := []string{"user/bob/newMessage", "user/alice/newMessage"}; !slices.Equal(older, want) {
		t.Fatalf("forwarded to older nodes on %q, want %q", older, want)
	}
	if got := delivered(t, e); len(got) != 2 {
		t.Fatalf("live deliveries %q, want 2", got)
	}
}

func TestDeliveryTopics(t *testing.T) {
	for _, c := range []struct {
		from, to, group string
		want            []string
	}{
		{"alice", "bob", "", []string{"user/bob/newMessage", "user/alice/newMessage"}},
		{"alice", "alice", "", []string{"user/alice/newMessage"}},
		{"alice", "bob@us", "", []string{"user/alice/newMessage"}},  // to another region: its link carries it
		{"bob@us", "alice", "", []string{"user/alice/newMessage"}},  // from another region
		{"alice", "", "g1", []string{"group/g1/newMessage"}},        // the sender's devices are members
		{"bob@us", "", "g1@us", []string{"group/g1@us/newMessage"}}, // a group of another region
	} {
		if got := deliveryTopics(c.from, c.to, c.group); !slices.Equal(got, c.want) {
			t.Errorf("deliveryTopics(%q, %q, %q) = %q, want %q", c.from, c.to, c.group, got, c.want)
		}
	}
}

func count(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
