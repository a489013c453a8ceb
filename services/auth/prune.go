package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Pruning: every sign-in leaves a refresh-token family, and nothing
// removed them once they had expired or been revoked, so r/auth/rtfam/
// grew with every login for ever (and sign out everywhere, which scans
// it, grew slower). The leader walks the families in bounded steps
// (CmdAuthPrune, a cursor each) and removes those expired or revoked more
// than a day before (presenting one answers 401 invalid_refresh_token
// either way), with their session index entries, and the ended-session
// records no token can need any more.

// keyFamiliesIndexed marks that every live family is in its user's
// index (r/auth/rtuser/): families made before the index existed joined
// it only when used, so sign out everywhere read every user's families.
// A prune walk indexes each live family it looks at, and its last step
// sets the mark (value: the walk's time, JSON) on a node that applied the
// whole walk with this code (not one upgraded halfway through, whose
// first steps indexed nothing); new families are indexed when made. From
// then on a sign-out reads the user's index only. Nodes without the mark
// read every family, and find the same ones.
const keyFamiliesIndexed = "r/auth/rtindexed"

// pruneAfter is how long an expired or revoked family is kept.
const pruneAfter = 24 * time.Hour

// pruneEvery is how often the leader walks the families.
const pruneEvery = time.Hour

// pruneStepKeys bounds the families one step looks at (an apply holds
// the FSM: a step must take milliseconds).
const pruneStepKeys = 2000

// authPruneCmd is one step: look at the families from After (exclusive)
// on, as of At.
type authPruneCmd struct {
	V     int       `json:"v"`
	After string    `json:"after,omitempty"` // family ID; "" from the start
	At    time.Time `json:"at"`
	// Walk is the At of the walk's first step, in every step (zero from
	// nodes of earlier versions): the last step marks the index complete
	// only on a node that applied that first step with this code.
	Walk time.Time `json:"walk,omitzero"`
	// EndedBefore: the last step removes the ended-session records of
	// sessions ended before it, the proposer's At less its access token
	// lifetime (and the verify leeway). It is in the command so that
	// every node removes the same records whatever its own
	// --access-token-ttl; zero (a leader of an earlier version): the
	// applying node's own lifetime, as before.
	EndedBefore time.Time `json:"endedBefore,omitzero"`
}

// keyIndexWalk holds the Walk of the prune walk this node indexed from
// its first step (JSON time).
const keyIndexWalk = "r/auth/rtindexwalk"

// liveFamiliesIndex marks the walk and the completion of the index of
// live families by user (r/auth/rtuser/).
var liveFamiliesIndex = fsm.IndexMarks{Walk: []byte(keyIndexWalk), Done: []byte(keyFamiliesIndexed)}

// PruneStep is the value of a step: where the next one starts ("" when
// the walk is done) and how many families it removed.
type PruneStep struct {
	Next    string
	Removed int
}

// applyAuthPrune removes, among the next pruneStepKeys families, those
// expired or revoked more than pruneAfter before At, with their index
// entries; the last step also removes the ended-session records older
// than EndedBefore (the proposer's access token lifetime: never the
// applying node's config, which may differ from node to node).
func (s *Service) applyAuthPrune(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c authPruneCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if c.V != commandVersion {
		return nil, fmt.Errorf("%w: auth prune version %d", errBadCommand, c.V)
	}
	if c.After == "" {
		for _, m := range []fsm.IndexMarks{liveFamiliesIndex, allFamiliesIndex} {
			if err := m.Begin(tx, c.Walk); err != nil {
				return nil, err
			}
		}
	}
	cutoff := c.At.Add(-pruneAfter)
	type doomed struct{ family, uid string }
	var gone, unindexed, kept []doomed // unindexed: live, maybe not in the index; kept: every family that stays
	last, more := "", false
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRefresh), PrefetchValues: true})
	seen := 0
	for it.Seek([]byte(prefixRefresh + c.After)); it.Valid(); it.Next() {
		family := string(it.Item().Key()[len(prefixRefresh):])
		if c.After != "" && family == c.After {
			continue
		}
		if seen == pruneStepKeys {
			more = true
			break
		}
		seen++
		last = family
		var f refreshFamily
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &f) }); err != nil {
			continue // not ours to judge
		}
		if f.ExpiresAt.Before(cutoff) || (f.Revoked && f.UpdatedAt.Before(cutoff)) {
			gone = append(gone, doomed{family, f.UID})
		} else if wire.ValidUserID(f.UID) == nil {
			kept = append(kept, doomed{family, f.UID})
			if !f.Revoked {
				unindexed = append(unindexed, doomed{family, f.UID})
			}
		}
	}
	it.Close()
	for _, d := range unindexed {
		k := prefixUserFamily + d.uid + "/" + d.family
		if found, err := keyExists(tx, k); err != nil {
			return nil, err
		} else if !found {
			if err := indexFamily(tx, d.uid, d.family); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range kept { // allfamilies.go
		if found, err := keyExists(tx, prefixAllFamilies+d.uid+"/"+d.family); err != nil {
			return nil, err
		} else if !found {
			if err := indexAllFamily(tx, d.uid, d.family); err != nil {
				return nil, err
			}
		}
	}
	next := ""
	if more {
		next = last // the next step starts after the last family looked at
	}
	for _, d := range gone {
		if err := tx.Delete([]byte(prefixRefresh + d.family)); err != nil {
			return nil, err
		}
		if err := unindexFamily(tx, d.uid, d.family); err != nil {
			return nil, err
		}
		if err := unindexAllFamily(tx, d.uid, d.family); err != nil {
			return nil, err
		}
	}
	if next == "" {
		if err := liveFamiliesIndex.End(tx, c.Walk); err != nil {
			return nil, err
		}
		if err := allFamiliesIndex.End(tx, c.Walk); err != nil {
			return nil, err
		}
		old := c.EndedBefore
		if old.IsZero() {
			old = c.At.Add(-(s.cfg.AccessTTL + verifyLeeway))
		}
		if _, err := fsm.DeleteMatching(tx, []byte(prefixSessionEnded), fsm.NewBudget(pruneStepKeys), func(_, v []byte) (bool, error) {
			var at time.Time
			if err := json.Unmarshal(v, &at); err != nil {
				return false, nil
			}
			return at.Before(old), nil
		}); err != nil {
			return nil, err
		}
	}
	return PruneStep{Next: next, Removed: len(gone)}, nil
}

// Prune walks every family once, step by step (the leader's RunErasure
// calls it every pruneEvery). It answers how many families it removed.
func (s *Service) Prune(ctx context.Context) (int, error) {
	removed, after := 0, ""
	walk := s.now().UTC()
	for {
		now := s.now().UTC()
		v, err := s.propose(ctx, wire.CmdAuthPrune, authPruneCmd{V: commandVersion, After: after, At: now, Walk: walk,
			EndedBefore: now.Add(-(s.cfg.AccessTTL + verifyLeeway))})
		if err != nil {
			return removed, fmt.Errorf("auth: prune: %w", err)
		}
		step, ok := v.(PruneStep)
		if !ok {
			return removed, fmt.Errorf("auth: prune: the step answered %T", v)
		}
		removed += step.Removed
		if step.Next == "" {
			return removed, nil
		}
		after = step.Next
	}
}
