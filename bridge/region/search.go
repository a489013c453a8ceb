package region

// Search across regions (issue 14 point 1): GET /user/search?q=…&regions=all
// in region eu asks every linked region over the node's query
// connection (profile.go), in parallel, each for at most SearchTimeout:
// a QoS 1 publish on $link/eu/search, {"q":"bo","limit":20}, with the
// node's response topic; the region answers {"users":[profile, ...]}
// (its own search, first page). The answers come back with userId
// qualified (bob@us); a region that does not answer in time, or whose
// link is down, is named in unanswered.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

// Searcher is this region's user search for the other regions (the
// users service; optional: without it a search request is answered
// with no users).
type Searcher interface {
	SearchJSON(q string, limit int) ([]json.RawMessage, error)
}

// SearchTopic is where region's query connections ask for a search.
func SearchTopic(region string) string { return LinkPrefix + region + "/search" }

// DefaultSearchTimeout bounds the wait for each region's search answer.
const DefaultSearchTimeout = 2 * time.Second

// MaxRemoteSearch is the most users a region answers to a search.
const MaxRemoteSearch = 50

type searchRequest struct {
	Q     string `json:"q"`
	Limit int    `json:"limit"`
}

type searchAnswer struct {
	Users []json.RawMessage `json:"users"`
}

// RemoteSearch asks every linked region for users matching q (at most
// limit each) and returns their profiles with userId qualified
// (name@region), by region in name order, and the regions that did not
// answer within the search timeout (sorted).
func (b *Bridge) RemoteSearch(ctx context.Context, q string, limit int) (found []json.RawMessage, unanswered []string) {
	limit = min(max(limit, 1), MaxRemoteSearch)
	regions := b.Links()
	answers := make([][]json.RawMessage, len(regions))
	failed := make([]bool, len(regions))
	var wg sync.WaitGroup
	for i, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, b.cfg.SearchTimeout)
			defer cancel()
			users, err := b.searchRegion(rctx, r, q, limit)
			if err != nil {
				b.m.profiles.WithLabelValues(r, "search_unanswered").Inc()
				b.log.Debug("region search: no answer", "link", r, "error", err)
				failed[i] = true
				return
			}
			b.m.profiles.WithLabelValues(r, "search").Inc()
			answers[i] = users
		}()
	}
	wg.Wait()
	for i, r := range regions {
		if failed[i] {
			unanswered = append(unanswered, r)
			continue
		}
		found = append(found, answers[i]...)
	}
	slices.Sort(unanswered)
	return found, unanswered
}

// searchRegion asks one region and qualifies the userIds of its answer.
func (b *Bridge) searchRegion(ctx context.Context, region, q string, limit int) ([]json.RawMessage, error) {
	raw, err := b.request(ctx, region, SearchTopic(b.cfg.Region), mustJSON(searchRequest{Q: q, Limit: limit}))
	if err != nil {
		return nil, err
	}
	var ans searchAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, fmt.Errorf("malformed answer: %v", err)
	}
	out := make([]json.RawMessage, 0, min(len(ans.Users), limit))
	for _, u := range ans.Users {
		var p map[string]any
		if json.Unmarshal(u, &p) != nil {
			continue
		}
		id, _ := p["userId"].(string)
		if wire.ValidUserID(id) != nil {
			continue // not a user of that region's
		}
		p["userId"] = id + "@" + region
		out = append(out, mustJSON(p))
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// answerSearch answers another region's search request with this
// region's first page of matches.
func (b *Bridge) answerSearch(region string, payload []byte) ([]byte, error) {
	var req searchRequest
	if err := json.Unmarshal(payload, &req); err != nil || req.Q == "" {
		return nil, fmt.Errorf("region: link %s: malformed search request: %w", region, wire.ErrInvalid)
	}
	req.Limit = min(max(req.Limit, 1), MaxRemoteSearch)
	s, ok := b.deps.Profiles.(Searcher)
	if !ok {
		return mustJSON(searchAnswer{Users: []json.RawMessage{}}), nil
	}
	users, err := s.SearchJSON(req.Q, req.Limit)
	if err != nil {
		return nil, fmt.Errorf("region: search for %s: %v: %w", region, err, wire.ErrUnavailable)
	}
	if users == nil {
		users = []json.RawMessage{}
	}
	b.m.received.WithLabelValues(region, "search_request").Inc()
	return mustJSON(searchAnswer{Users: users}), nil
}
