package node

import (
	"encoding/json"
	"sync"

	pushbridge "github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/push"
	"github.com/edgechat/edgechat/services/users"
)

// groupWatchMessages bounds the group messages whose pushable members
// groupWatch keeps (deliveries of a message come in a burst after its
// commit, so the last few hundred are all it needs).
const groupWatchMessages = 1024

// groupWatch tells the broker's ack watch which members of a group
// message may be pushed for it (broker.GroupUnackedDeliveries): the
// sender pushes, in a group above --push-group-limit, only members who
// are mentioned, whose message it answers, or who opted in
// (pushbridge.Candidates), so the watch need not hold a delivery to any
// other. Decided once per message, at its first delivery to a device of
// a user who may have one, from the group's member count, the message's
// mentions and the group's opt-ins as they are then (the sender reads
// them at the commit too; a member who opts in or is added in the few
// milliseconds between is not watched for that message). A reply, an
// envelope that does not decode and a group that cannot be read watch
// every member, as before: the reply's author is known only by reading
// the message it answers.
type groupWatch struct {
	users *users.Service
	push  *push.Service
	limit int

	mu    sync.Mutex
	msgs  map[snowflake.ID]pushableMembers
	order [groupWatchMessages]snowflake.ID // ring, for eviction
	next  int
}

// pushableMembers: every member (all), or only those in who.
type pushableMembers struct {
	all bool
	who map[string]bool
}

func newGroupWatch(u *users.Service, p *push.Service, limit int) *groupWatch {
	return &groupWatch{users: u, push: p, limit: limit, msgs: map[snowflake.ID]pushableMembers{}}
}

// WatchGroup: see broker.GroupUnackedDeliveries.
func (u *pushUnacked) WatchGroup(uid, gid string, id snowflake.ID, payload []byte) bool {
	if u.groups == nil {
		return true
	}
	return u.groups.watch(uid, gid, id, payload)
}

func (g *groupWatch) watch(uid, gid string, id snowflake.ID, payload []byte) bool {
	g.mu.Lock()
	p, ok := g.msgs[id]
	g.mu.Unlock()
	if !ok {
		p = g.pushable(gid, payload)
		g.mu.Lock()
		if _, ok := g.msgs[id]; !ok {
			if old := g.order[g.next]; old != 0 {
				delete(g.msgs, old)
			}
			g.order[g.next] = id
			g.next = (g.next + 1) % groupWatchMessages
			g.msgs[id] = p
		}
		g.mu.Unlock()
	}
	return p.all || p.who[uid]
}

// pushable reads who may be pushed for a message of gid (its envelope).
func (g *groupWatch) pushable(gid string, payload []byte) pushableMembers {
	grp, err := g.users.Group(gid)
	if err != nil || grp.MemberCount <= g.limit {
		return pushableMembers{all: true}
	}
	var env wire.Envelope
	if json.Unmarshal(payload, &env) != nil || env.ReplyTo != nil {
		return pushableMembers{all: true}
	}
	optIns, err := g.push.GroupOptIns(gid)
	if err != nil {
		return pushableMembers{all: true}
	}
	who := pushbridge.Mentioned(pushbridge.Message{From: env.From, Group: gid, Body: env.Body, Mentions: env.Mentions})
	for _, o := range optIns {
		who[o] = true
	}
	return pushableMembers{who: who}
}
