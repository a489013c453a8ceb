package region

// Operations (issue 14 point 7): GET /admin/links, the readiness
// warning of an old backlog, and --link-retention.
//
// Retention: a message waits in a link's outbox until the other region
// acknowledges it, however long the link is down, except that the
// leader drops what is older than Config.Retention (default 7 days), so
// that a dead link cannot fill the disk. It moves the link's cursor past
// the expired messages at its head through the Raft log
// (CmdRegionCursor, as an acknowledgement does), and deletes the expired
// messages behind an entry that is not a message (a contact, a block, a
// group's state, a leave, a notice: they have no age and never expire)
// by position (CmdRegionExpire): they used to stop the expiry, so that
// the messages behind them stayed on disk while the link was down. It
// counts them in edgechat_region_link_expired_total and logs it; the
// link does not send a message older than that either. This is the one
// case where a message acknowledged to its sender never reaches the
// other region.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Defaults of the operations settings.
const (
	DefaultRetention   = 7 * 24 * time.Hour
	DefaultBacklogWarn = 10 * time.Minute
)

// LinkStatus is one link as GET /admin/links shows it.
type LinkStatus struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// State is "up" or "down" on the node that runs the links (the Raft
	// leader), "standby" on the others.
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"` // of the last change of state on this node
	// Backlog is how many messages wait for the other region
	// (replicated: every node knows it); OldestAgeSec is the age of the
	// oldest of them.
	Backlog      uint64  `json:"backlog"`
	OldestAgeSec float64 `json:"oldestAgeSec"`
	Sent         Traffic `json:"sent"`     // by this node: messages the other region acknowledged
	Received     Traffic `json:"received"` // on this node: messages and ephemeral traffic from the other region
	Expired      uint64  `json:"expired"`  // messages dropped by --link-retention, by this node while leading
	// Error is why the last connection attempt failed, while the link is
	// down (the other region refused its secret or number, a dial or TLS
	// error); empty otherwise.
	Error string `json:"error,omitempty"`
}

// Traffic is a count of messages and bytes.
type Traffic struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
}

// Status is every link's status, sorted by name.
func (b *Bridge) Status() []LinkStatus {
	leader := b.deps.Leadership.IsLeader()
	now := time.Now()
	var out []LinkStatus
	for _, name := range b.Links() {
		st := b.stats[name]
		ls := LinkStatus{Name: name, URL: b.links[name].URL, State: "standby",
			Sent:     Traffic{st.msgsOut.Load(), st.bytesOut.Load()},
			Received: Traffic{st.msgsIn.Load(), st.bytesIn.Load()},
			Expired:  st.expired.Load()}
		up, since := st.state()
		if leader {
			ls.State, ls.Since = "down", since
			if up {
				ls.State = "up"
			} else {
				ls.Error = st.lastFailure()
			}
		}
		ls.Backlog, _ = b.Backlog(name)
		if t, ok, _ := oldest(b.deps.DB, name); ok {
			ls.OldestAgeSec = max(0, now.Sub(t).Seconds())
		}
		out = append(out, ls)
	}
	return out
}

// Routes are the bridge's HTTP routes: GET /admin/links.
func (b *Bridge) Routes() []httpapi.Route {
	return []httpapi.Route{{Method: http.MethodGet, Pattern: "/admin/links", Handler: b.handleLinks, Admin: true, Class: httpapi.ClassAdmin}}
}

func (b *Bridge) handleLinks(w http.ResponseWriter, _ *http.Request) {
	links := b.Status()
	if links == nil {
		links = []LinkStatus{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"region": b.cfg.Region, "links": links})
}

// Warnings are the readiness warnings: a link whose oldest waiting
// message is older than Config.BacklogWarn.
func (b *Bridge) Warnings() []string {
	var out []string
	for _, name := range b.Links() {
		t, ok, err := oldest(b.deps.DB, name)
		if err != nil || !ok {
			continue
		}
		if age := time.Since(t); age > b.cfg.BacklogWarn {
			n, _ := b.Backlog(name)
			out = append(out, fmt.Sprintf("region link %s: %d messages wait, the oldest for %v (over --link-backlog-warn %v)",
				name, n, age.Round(time.Second), b.cfg.BacklogWarn))
		}
	}
	return out
}

// messageTime is when a stored envelope was committed: the time of its
// Snowflake ID; ok is false for an entry that is no message and for a
// message this region relays (queuedTime).
func messageTime(payload []byte) (time.Time, bool) {
	t, ok, relayed := queuedTime(payload)
	return t, ok && !relayed
}

// queuedTime reads an outbox entry: ok tells a message with an ID (t is
// the ID's time), relayed a group message of a member of another region
// that this region, the group's home, relays to the other regions with
// members. A relayed message's ID tells when it was sent in its own
// region, not how long it has waited here: it may have waited in that
// region's outbox through an outage, up to that region's
// --link-retention, and reached this region a moment ago. Judged by its
// ID, the link dropped it as expired as soon as it was staged (and the
// members of the other regions never got a message its region and the
// home had stored): it is timed from when the link first read it
// instead (linkClient.expired), and the leader's expiry (expire) passes
// it as it passes a group's state.
func queuedTime(payload []byte) (t time.Time, ok, relayed bool) {
	var head struct {
		ID    snowflake.ID `json:"id"`
		From  string       `json:"from"`
		Group string       `json:"group"`
	}
	if json.Unmarshal(payload, &head) != nil || head.ID == 0 {
		return time.Time{}, false, false
	}
	// Stored here, a group message's sender is qualified only when it is
	// a user of another region: the home relays it.
	return head.ID.Time(), true, head.Group != "" && strings.IndexByte(head.From, '@') >= 0
}

// oldest is the commit time of the oldest message in region's outbox.
func oldest(db *badger.DB, region string) (t time.Time, ok bool, err error) {
	err = db.View(func(tx *badger.Txn) error {
		cur, _, err := getU64(tx, cursorKey(region))
		if err != nil {
			return err
		}
		prefix := outPrefix(region)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(outKey(region, cur)); it.Valid(); it.Next() {
			err := it.Item().Value(func(v []byte) error {
				t, ok = messageTime(v)
				return nil
			})
			if err != nil || ok {
				return err
			}
		}
		return nil
	})
	return t, ok, err
}

// maxExpire bounds the messages one round of expiry drops (one Raft
// entry each way, well within a transaction); expire goes on until done.
const maxExpire = 4096

// expiredEntries reads region's outbox from the cursor up to the first
// message committed at or after cutoff, skipping entries that are not
// messages: to is where the cursor may move (past the expired messages
// at the head), head how many those are, and behind the positions of the
// expired messages after the first entry that is not a message. At most
// max in all. tell are those of them whose senders are told
// (expirytold.go).
func expiredEntries(db *badger.DB, region string, cutoff time.Time, max int) (to, head uint64, behind []uint64, tell []expiredMsg, err error) {
	err = db.View(func(tx *badger.Txn) error {
		cur, _, err := getU64(tx, cursorKey(region))
		if err != nil {
			return err
		}
		to = cur
		atHead := true
		prefix := outPrefix(region)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(outKey(region, cur)); it.Valid() && int(head)+len(behind) < max; it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefix)+8 {
				continue
			}
			var t time.Time
			var msg, told bool
			var em expiredMsg
			if err := it.Item().Value(func(v []byte) error {
				t, msg = messageTime(v)
				if msg && t.Before(cutoff) {
					em, told = expiredOf(v, region)
				}
				return nil
			}); err != nil {
				return err
			}
			pos := binary.BigEndian.Uint64(k[len(prefix):])
			switch {
			case !msg:
				atHead = false // waits for the link; what is behind it may expire
			case !t.Before(cutoff):
				return nil // messages are in commit order: the rest is younger
			case atHead:
				to, head = pos+1, head+1
			default:
				behind = append(behind, pos)
			}
			if told {
				tell = append(tell, em)
			}
		}
		return nil
	})
	return to, head, behind, tell, err
}

// expire drops region's messages older than the retention (the leader,
// every Config.ExpireEvery).
func (b *Bridge) expire(ctx context.Context, region string) {
	cutoff := time.Now().Add(-b.cfg.Retention)
	var dropped uint64
	defer func() {
		if dropped == 0 {
			return
		}
		b.log.Warn("region link: messages older than --link-retention dropped; they will not reach the other region",
			"link", region, "dropped", dropped, "retention", b.cfg.Retention)
		b.notify(region)
	}()
	for ctx.Err() == nil {
		to, head, behind, tell, err := expiredEntries(b.deps.DB, region, cutoff, maxExpire)
		if err != nil {
			return
		}
		if head+uint64(len(behind)) == 0 {
			// Nothing left to tell: a run of failures to tell, if any,
			// is over (its messages left another way: the link sent
			// them, or told their senders itself). The next failure
			// starts a new one, with a new tellGrace.
			b.toldOrGaveUp(region, nil)
			return
		}
		// The senders are told before their messages go (expirytold.go).
		if !b.toldOrGaveUp(region, b.tellExpired(ctx, region, tell)) {
			return
		}
		if head > 0 && !b.proposeExpiry(ctx, region, wire.CmdRegionCursor, cursorCmd{Region: region, Pos: to}.encode(), head) {
			return
		}
		if len(behind) > 0 && !b.proposeExpiry(ctx, region, wire.CmdRegionExpire, expireCmd{Region: region, Pos: behind}.encode(), uint64(len(behind))) {
			return
		}
		dropped += head + uint64(len(behind))
		if head+uint64(len(behind)) < maxExpire {
			return
		}
	}
}

// proposeExpiry commits one command of expire, which drops n messages.
func (b *Bridge) proposeExpiry(ctx context.Context, region string, t byte, payload []byte, n uint64) bool {
	pctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	if _, err := b.deps.Proposer.Propose(pctx, t, payload); err != nil {
		b.log.Warn("region link: dropping expired messages failed; retrying", "link", region, "err", err)
		return false
	}
	b.stats[region].expired.Add(n)
	b.m.expired.WithLabelValues(region).Add(float64(n))
	return true
}

// expireCmd is CmdRegionExpire's payload: uvarint-length region, then
// 8-byte positions of expired messages to delete from its outbox.
type expireCmd struct {
	Region string
	Pos    []uint64
}

func (c expireCmd) encode() []byte {
	b := binary.AppendUvarint(nil, uint64(len(c.Region)))
	b = append(b, c.Region...)
	for _, p := range c.Pos {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	return b
}

func decodeExpireCmd(b []byte) (expireCmd, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) || (uint64(len(b)-k)-n)%8 != 0 {
		return expireCmd{}, errors.New("region: malformed expire command")
	}
	c := expireCmd{Region: string(b[k : k+int(n)])}
	if address.ValidRegion(c.Region) != nil {
		return expireCmd{}, fmt.Errorf("region: expire command for region %q", c.Region)
	}
	for rest := b[k+int(n):]; len(rest) > 0; rest = rest[8:] {
		c.Pos = append(c.Pos, binary.BigEndian.Uint64(rest))
	}
	return c, nil
}

// applyExpire deletes the listed entries of a region's outbox that are
// still there, at or above the cursor, and counts them as holes (so the
// backlog leaves them out until the cursor passes them).
func applyExpire(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	c, err := decodeExpireCmd(payload)
	if err != nil {
		return nil, err
	}
	cur, _, err := getU64(tx, cursorKey(c.Region))
	if err != nil {
		return nil, err
	}
	holes, _, err := getU64(tx, holesKey(c.Region))
	if err != nil {
		return nil, err
	}
	for _, p := range c.Pos {
		if p < cur {
			continue
		}
		if _, err := tx.Get(outKey(c.Region, p)); errors.Is(err, badger.ErrKeyNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		if err := tx.Delete(outKey(c.Region, p)); err != nil {
			return nil, err
		}
		holes++
	}
	return nil, setHoles(tx, c.Region, holes)
}

// runExpiry runs expire for every link until ctx ends (while leading).
func (b *Bridge) runExpiry(ctx context.Context) {
	// Failures to tell counted while this node led before are not this
	// term's (toldOrGaveUp).
	b.mu.Lock()
	clear(b.tellFailing)
	b.mu.Unlock()
	t := time.NewTicker(b.cfg.ExpireEvery)
	defer t.Stop()
	for {
		for _, name := range b.Links() {
			b.expire(ctx, name)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
