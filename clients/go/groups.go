package edgechat

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// Group messages arrive live on group/{gid}/newMessage, one topic per
// group, so the client follows the user's groups: at each connection it
// lists them (GET /user/groups) and subscribes to each, and it
// subscribes to a group it joins when user/{me}/events says so
// (group.created, group.member_added). Each time it subscribes it syncs
// afterwards, so that what was committed before the subscription took
// effect comes through /chat/sync (which holds the messages of the
// groups the user is in): subscribe first, then sync. The server drops
// the subscriptions of a member it removes. With Options.OnTypingNotice
// the client follows each group's group/{gid}/typing the same way.

const (
	groupsPage     = 200 // GET /user/groups allows up to 200
	groupSubsBatch = 100 // filters per SUBSCRIBE
)

func groupTopic(gid string) string { return "group/" + gid + "/newMessage" }

// groupTypingTopic is followed too when Options.OnTypingNotice is set.
func groupTypingTopic(gid string) string { return "group/" + gid + "/typing" }

// followMyGroups lists the user's groups and subscribes to them on the
// connection of ctx, asking again while the API cannot answer.
func (c *Client) followMyGroups(ctx context.Context, cm *autopaho.ConnectionManager) {
	var gids []string
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 10*time.Second) {
		var err error
		if gids, err = c.myGroups(ctx); err == nil {
			break
		}
		var ae *APIError
		if ctx.Err() != nil || (errors.As(err, &ae) && ae.Status != http.StatusServiceUnavailable && ae.Status != http.StatusTooManyRequests && ae.Status < 500) {
			// Closed, dropped, or an answer asking again will not change
			// (a server without groups): the next connection tries again.
			c.log.Debug("not following groups on this connection", "err", err)
			return
		}
		c.log.Warn("listing my groups failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	c.subscribeGroups(ctx, cm, gids)
}

// Group is one of my groups as GET /user/groups lists it.
type Group struct {
	ID          string `json:"groupId"`
	Name        string `json:"name,omitempty"` // chosen by its admins: untrusted text
	Description string `json:"description,omitempty"`
	Owner       string `json:"owner,omitempty"`
	MemberCount int    `json:"memberCount,omitempty"`
	Role        string `json:"role,omitempty"` // mine: "owner", "admin" or "member"
}

// Groups lists the groups I am a member of, in group-ID order (all of
// them: it pages through GET /user/groups). Conversations lists only
// the groups that have messages, with their unread counts.
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	var groups []Group
	cursor := ""
	for {
		q := url.Values{"limit": {"200"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Groups     []Group `json:"groups"`
			NextCursor string  `json:"nextCursor"`
		}
		if err := c.get(ctx, "/user/groups", q, &page); err != nil {
			return nil, err
		}
		for _, g := range page.Groups {
			if g.ID != "" {
				groups = append(groups, g)
			}
		}
		if page.NextCursor == "" || page.NextCursor == cursor || len(page.Groups) == 0 {
			return groups, nil
		}
		cursor = page.NextCursor
	}
}

// myGroups lists the IDs of my groups.
func (c *Client) myGroups(ctx context.Context) ([]string, error) {
	groups, err := c.Groups(ctx)
	if err != nil {
		return nil, err
	}
	gids := make([]string, len(groups))
	for i, g := range groups {
		gids[i] = g.ID
	}
	return gids, nil
}

// subscribeGroups subscribes to the groups' message topics, asking again
// for those the node cannot grant for now, then syncs. Refusals (no
// longer a member) are dropped.
func (c *Client) subscribeGroups(ctx context.Context, cm *autopaho.ConnectionManager, gids []string) {
	if len(gids) == 0 {
		return
	}
	todo := make([]string, 0, len(gids))
	for _, gid := range gids {
		todo = append(todo, groupTopic(gid))
		if c.opts.OnTypingNotice != nil {
			todo = append(todo, groupTypingTopic(gid))
		}
	}
	for wait := 250 * time.Millisecond; len(todo) > 0; wait = min(2*wait, 10*time.Second) {
		var again []string
		for batch := range slices.Chunk(todo, groupSubsBatch) {
			subs := make([]paho.SubscribeOptions, len(batch))
			for i, t := range batch {
				subs[i] = paho.SubscribeOptions{Topic: t, QoS: 1}
			}
			refused, unverified, err := subscribe(ctx, cm, subs)
			if err != nil {
				c.log.Debug("group subscription failed; the next connection tries again", "err", err)
				return
			}
			if len(refused) > 0 {
				c.log.Debug("group subscriptions refused", "topics", refused)
			}
			again = append(again, unverified...)
		}
		// Whatever was granted takes effect now; what was committed
		// before comes through the sync.
		c.requestSync()
		if todo = again; len(todo) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// noteGroupEvent follows a group the user joins, as user/{me}/events
// tells. Called from the MQTT router: it must not block.
func (c *Client) noteGroupEvent(payload []byte) {
	var ev struct {
		Type string `json:"type"`
		Data struct {
			GID  string   `json:"gid"`
			UID  string   `json:"uid"`
			UIDs []string `json:"uids"`
		} `json:"data"`
	}
	if json.Unmarshal(payload, &ev) != nil || ev.Data.GID == "" {
		return
	}
	switch ev.Type {
	case "group.created": // sent to its members only
	case "group.member_added":
		if ev.Data.UID != c.userID && !slices.Contains(ev.Data.UIDs, c.userID) {
			return
		}
	default:
		return
	}
	c.goOnConnection(func(ctx context.Context, cm *autopaho.ConnectionManager) {
		c.subscribeGroups(ctx, cm, []string{ev.Data.GID})
	})
}

// goOnConnection runs fn in a goroutine of the client with the current
// connection, unless there is none (its successor lists the groups
// anyway) or the client is closed.
func (c *Client) goOnConnection(fn func(ctx context.Context, cm *autopaho.ConnectionManager)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cm := c.connCtx, c.connCM
	if c.closed || ctx == nil || ctx.Err() != nil {
		return
	}
	c.wg.Add(1) // under mu, so never after Close's Wait began
	go func() {
		defer c.wg.Done()
		fn(ctx, cm)
	}()
}
