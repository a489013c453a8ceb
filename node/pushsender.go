package node

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	pushbridge "github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/broker/registry"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/push"
	"github.com/edgechat/edgechat/services/users"
)

// buildPushSender builds the push bridge's sender over the services and
// connects the outbox to it: the archive stages messages in the push
// outbox, and the outbox tells the sender after each commit.
func (n *Node) buildPushSender() error {
	metrics := n.pushMetrics
	sender, err := pushbridge.NewSender(pushbridge.SenderConfig{
		Grace:      n.cfg.PushGrace,
		NoGrace:    n.cfg.PushGrace == 0,
		GroupLimit: n.cfg.PushGroupLimit,
		AckTimeout: n.cfg.PushAckTimeout,
	}, pushbridge.SenderDeps{
		Outbox:        pushOutbox{n.Push},
		Registrations: pushRegistrations{s: n.Push, deleted: n.Auth.Deleted},
		Preferences:   pushPreferences{n.Push},
		Archive:       n.Archive,
		Directory:     n.pushDirectory(),
		Blocks:        n.Users,
		SignedIn:      n.Auth,
		Connections:   registryConnections{t: n.clients, down: n.raft.MarkedDown},
		Unacked:       n.Push,
		Leadership:    n.raft,
		Provider:      pushbridge.Counted(n.PushRouter, metrics),
		Metrics:       metrics,
		Registerer:    n.registry,
		Logger:        n.log,
	})
	if err != nil {
		return fmt.Errorf("node: push sender: %w", err)
	}
	n.PushSender = sender
	n.Push.OnStaged(func(m push.StagedMessage) { sender.Staged(m.ID) })
	n.Push.OnUnacked(sender.Unacked)
	n.pushUnacked = newPushUnacked(n.Push, n.log)
	n.pushUnacked.groups = newGroupWatch(n.Users, n.Push, n.cfg.PushGroupLimit)
	return nil
}

// pushUnacked carries the deliveries the broker saw a connected device
// not acknowledge (broker.UnackedDeliveries) to the push outbox
// (CmdPushUnacked), off the broker's goroutines.
type pushUnacked struct {
	s      *push.Service
	ch     chan push.UnackedDelivery
	log    *slog.Logger
	groups *groupWatch // which members of a large group may be pushed (pushwatchgroup.go)
}

// Bounds of pushUnacked: deliveries waiting to be recorded, and how long
// a record is tried (the sender waits a few seconds past the timeout).
const (
	pushUnackedQueue = 8192
	pushUnackedTry   = 3 * time.Second
)

func newPushUnacked(s *push.Service, log *slog.Logger) *pushUnacked {
	return &pushUnacked{s: s, ch: make(chan push.UnackedDelivery, pushUnackedQueue), log: log.With("component", "push")}
}

func (u *pushUnacked) Watch(uid string) bool { return u.s.MayPush(uid) }

func (u *pushUnacked) Unacked(clientID string, ids []snowflake.ID) {
	for _, id := range ids {
		select {
		case u.ch <- push.UnackedDelivery{ID: id, Client: clientID}:
		default:
			u.log.Warn("push: an unacknowledged delivery could not be queued for recording", "client", clientID, "message", id)
		}
	}
}

// run records the queued deliveries, many to a command, until ctx ends.
func (u *pushUnacked) run(ctx context.Context) error {
	for {
		var batch []push.UnackedDelivery
		select {
		case <-ctx.Done():
			return nil
		case d := <-u.ch:
			batch = append(batch, d)
		}
		for more := true; more && len(batch) < push.MaxUnackedPerCommand; {
			select {
			case d := <-u.ch:
				batch = append(batch, d)
			default:
				more = false
			}
		}
		tctx, cancel := context.WithTimeout(ctx, pushUnackedTry)
		for {
			err := u.s.ReportUnacked(tctx, batch)
			if err == nil {
				break
			}
			if tctx.Err() != nil {
				u.log.Warn("push: unacknowledged deliveries not recorded; their devices are held back as connected",
					"deliveries", len(batch), "err", err)
				break
			}
			select {
			case <-tctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		cancel()
	}
}

// pushStaging lets the archive stage messages in the push outbox.
type pushStaging struct{ s *push.Service }

func (p pushStaging) Stage(tx *badger.Txn, m archive.Stored) (func(), error) {
	return p.s.Stage(tx, push.StagedMessage{ID: m.ID, From: m.From, To: m.To, Group: m.Group})
}

// pushOutbox adapts the outbox of the push data service.
type pushOutbox struct{ s *push.Service }

func (o pushOutbox) EachQueued(fn func(id snowflake.ID) bool) error { return o.s.EachQueued(fn) }
func (o pushOutbox) Handled(id snowflake.ID) ([]string, error)      { return o.s.Handled(id) }

func (o pushOutbox) RecordProgress(ctx context.Context, p pushbridge.Progress) error {
	q := push.Progress{Done: p.Done}
	for id, clients := range p.Handled {
		q.Handled = append(q.Handled, push.HandledDevices{ID: id, Clients: clients})
	}
	slices.SortFunc(q.Handled, func(a, b push.HandledDevices) int { return cmp.Compare(a.ID, b.ID) })
	return o.s.RecordProgress(ctx, q)
}

// pushPreferences adapts the users' push settings.
type pushPreferences struct{ s *push.Service }

func (p pushPreferences) Mutes(uid string, at time.Time) ([]pushbridge.Mute, error) {
	ms, err := p.s.Mutes(uid, at)
	if err != nil {
		return nil, err
	}
	out := make([]pushbridge.Mute, len(ms))
	for i, m := range ms {
		out[i] = pushbridge.Mute{Conversation: m.Conversation}
		if m.Until != nil {
			out[i].Until = *m.Until
		}
	}
	return out, nil
}

func (p pushPreferences) DND(uid string) (*pushbridge.DND, error) {
	from, to, offset, ok, err := p.s.DND(uid)
	if err != nil || !ok {
		return nil, err
	}
	return &pushbridge.DND{From: from, To: to, UTCOffset: offset}, nil
}

func (p pushPreferences) Preview(uid string) (pushbridge.Preview, error) {
	v, err := p.s.Preview(uid)
	return pushbridge.Preview(v), err
}

func (p pushPreferences) GroupOptIns(gid string) ([]string, error) { return p.s.GroupOptIns(gid) }

// pushDirectory names users and groups for notifications.
type pushDirectory struct {
	u *users.Service
	// remote fetches the profile of a user of another region (the region
	// bridge, whose cache answers most); nil without links.
	remote func(ctx context.Context, addr string) ([]byte, error)
}

func (n *Node) pushDirectory() pushDirectory {
	d := pushDirectory{u: n.Users}
	if n.Region != nil {
		d.remote = n.Region.RemoteProfile
	}
	return d
}

// remoteNameTimeout bounds the question to another region for a
// sender's display name, so that a slow link delays a push by that much
// at most (the name falls back to the address).
const remoteNameTimeout = 2 * time.Second

// DisplayName is uid's display name; for a user of another region
// (alice@eu) the one her region gives, as GET /user/alice@eu shows it.
// The address itself when there is none.
func (d pushDirectory) DisplayName(uid string) string {
	if strings.IndexByte(uid, '@') >= 0 {
		if d.remote == nil {
			return uid
		}
		ctx, cancel := context.WithTimeout(context.Background(), remoteNameTimeout)
		defer cancel()
		var p users.Profile
		if b, err := d.remote(ctx, uid); err == nil && json.Unmarshal(b, &p) == nil && p.DisplayName != "" && !p.Deleted {
			return p.DisplayName
		}
		return uid
	}
	if p, err := d.u.Profile(uid); err == nil && p.DisplayName != "" {
		return p.DisplayName
	}
	return uid
}

func (d pushDirectory) Group(gid string) (string, []string, error) {
	g, err := d.u.Group(gid)
	if err != nil {
		return "", nil, err
	}
	members, err := d.u.MemberIDs(gid)
	return g.Name, members, err
}

func (d pushDirectory) IsMember(gid, uid string) bool { return membership{d.u}.IsMember(gid, uid) }

// registryConnections: connected anywhere in the cluster, from the
// replicated client registry.
//
// A client registered on a member marked down (cut off, or crashed, but
// still a member) is not connected: nothing committed reaches its node,
// so the message cannot reach it live, and its entry stays until the
// node is back or removed (it cannot commit the withdrawal). Counted as
// connected, its device was held back for every message for as long as
// the node stayed away.
type registryConnections struct {
	t    *registry.Table
	down func(node string) bool // cluster.Raft.MarkedDown
}

func (c registryConnections) Connected(clientID string) bool {
	e, ok, err := c.t.Lookup(clientID)
	return ok && err == nil && (c.down == nil || !c.down(e.Node))
}
