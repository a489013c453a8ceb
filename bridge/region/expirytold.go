package region

// A message --link-retention drops never reaches the other region: its
// sender is told, as when the other region refuses one for good
// (notices.go). Before a dropped message leaves the outbox (the
// leader's expiry, ops.go, or the link that finds it expired as it
// reads it, link.go) the archive marks it undeliverable with the reason
// "expired" (Undeliverables): the status in history and sync, and the
// event to the sender's devices, once. Marked first, dropped after: a
// failure between the two marks it again at the next try (nothing
// changes then) and drops it. Told are a direct message of a user of
// this region, and a message of a user of this region to a group of the
// link's region (its home); not a message of a group of this region on
// its way to the other region's members (stored and delivered here),
// nor one this region relays for a member of a third region. Below
// feature level 4 the archive refuses the reason (a node of an earlier
// version would): the message is dropped untold, as before. So it is
// when telling has failed for tellGrace (a dead link must not fill the
// disk).

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/snowflake"
)

// reasonExpired is the archive's ReasonExpired.
const reasonExpired = "expired"

// tellConcurrency bounds the marks of one round in flight.
const tellConcurrency = 16

// expiredMsg is a dropped message whose sender is told.
type expiredMsg struct {
	ID              snowflake.ID
	From, To, Group string
}

// expiredOf reads an entry of region's outbox: the message whose sender
// is told when it is dropped, or false (another entry, a message of a
// group of this region, a relayed one).
func expiredOf(payload []byte, region string) (expiredMsg, bool) {
	if len(payload) == 0 || payload[0] != '{' {
		return expiredMsg{}, false // a state, notice, leave or erasure (marks)
	}
	var e struct {
		ID    snowflake.ID `json:"id"`
		From  string       `json:"from"`
		To    string       `json:"to"`
		Group string       `json:"group"`
	}
	if json.Unmarshal(payload, &e) != nil || e.ID == 0 || e.From == "" || strings.IndexByte(e.From, '@') >= 0 {
		return expiredMsg{}, false
	}
	switch {
	case e.Group == "" && address.RegionOf(e.To) == region:
		return expiredMsg{ID: e.ID, From: e.From, To: e.To}, true
	case e.Group != "" && address.RegionOf(e.Group) == region:
		return expiredMsg{ID: e.ID, From: e.From, Group: e.Group}, true
	}
	return expiredMsg{}, false
}

// tellGrace is how long the leader's expiry tries to tell the senders of
// expired messages before it drops them untold: a dead link must not
// fill the disk while, say, the segment store a sealed message's check
// reads is down.
const tellGrace = time.Hour

// toldOrGaveUp tells whether the leader's expiry may drop region's
// expired messages after telling their senders failed with err (nil:
// told): not while it has failed for less than tellGrace. The time is
// counted from the first failure of the current run: a success, or a
// round with nothing left to drop (expire), ends a run, and so does a
// new leadership term (runExpiry).
func (b *Bridge) toldOrGaveUp(region string, err error) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		delete(b.tellFailing, region)
		return true
	}
	since, ok := b.tellFailing[region]
	if !ok {
		if b.tellFailing == nil {
			b.tellFailing = map[string]time.Time{}
		}
		b.tellFailing[region] = time.Now()
		return false
	}
	if time.Since(since) < tellGrace {
		return false
	}
	b.log.Warn("region link: senders of expired messages could not be told for an hour; dropping them untold",
		"link", region, "err", err)
	return true
}

// tellExpired marks msgs, messages of region's outbox about to be
// dropped, undeliverable (reason "expired"). An error: one could not be
// marked now (no quorum, a timeout); the caller keeps the messages and
// tries again. A refusal for good (the message is no longer stored here,
// below feature level 4) is logged and passed.
func (b *Bridge) tellExpired(ctx context.Context, region string, msgs []expiredMsg) error {
	if b.deps.Undeliverables == nil || len(msgs) == 0 {
		return nil
	}
	var (
		mu      sync.Mutex
		failed  error
		refused int
		wg      sync.WaitGroup
	)
	sem := make(chan struct{}, tellConcurrency)
	for _, m := range msgs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			mctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
			defer cancel()
			var err error
			if m.Group != "" {
				err = b.deps.Undeliverables.MarkGroupUndeliverable(mctx, m.ID, m.From, m.Group, reasonExpired)
			} else {
				err = b.deps.Undeliverables.MarkUndeliverable(mctx, m.ID, m.From, m.To, reasonExpired)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
			case final(err):
				refused++
				b.log.Debug("region link: the sender of an expired message not told", "link", region, "id", m.ID, "err", err)
			case failed == nil:
				failed = err
			}
		}()
	}
	wg.Wait()
	if refused > 0 {
		b.log.Info("region link: senders of expired messages not told (below feature level 4, or the messages are gone)",
			"link", region, "messages", refused)
	}
	if failed != nil {
		b.log.Warn("region link: telling the senders of expired messages failed; retrying", "link", region, "err", failed)
	}
	return failed
}
