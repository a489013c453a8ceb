package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// entry is one line of a conversation: a stored message, or one of mine
// still on its way (ID empty, matched later by CID).
type entry struct {
	edgechat.Message
	pending bool
	failed  string // why sending failed; empty otherwise

	// An attachment of mine on its way: uploading while sent < total,
	// then processed by the server and sent as a message.
	uploading   bool
	sent, total int64
}

// A conversation's key is the peer's user ID for a direct conversation
// and "#" and the group's ID for a group ("#" is in no user ID, and a
// group ID is often a valid user name).
const groupMark = "#"

func groupKey(gid string) string { return groupMark + gid }

// groupOf returns the group of a conversation key, if it is a group's.
func groupOf(key string) (gid string, ok bool) {
	gid, ok = strings.CutPrefix(key, groupMark)
	return gid, ok && gid != ""
}

// keyOf is the key of the conversation a message belongs to.
func keyOf(m edgechat.Message, me string) string {
	if m.Group != "" {
		return groupKey(m.Group)
	}
	return m.Peer(me)
}

// addressed returns a message of mine to the conversation key.
func addressed(key string, m edgechat.Message) edgechat.Message {
	if gid, ok := groupOf(key); ok {
		m.Group = gid
	} else {
		m.To = key
	}
	return m
}

// groupInfo is what the client knows of one of my groups.
type groupInfo struct {
	name    string
	members int
}

// conv is one conversation as the client shows it.
type conv struct {
	peer     string  // the conversation's key (see groupKey)
	entries  []entry // oldest first; pending ones after every stored one
	unread   int
	hasMore  bool // older history exists on the server
	loaded   bool // history has been fetched at least once
	last     edgechat.Message
	activity time.Time
	// counted is the newest message the server's unread count covered
	// (the conversation list's last message): a message up to it that
	// arrives after the list is counted already.
	counted string
}

// state is everything the terminal client knows, changed only by the
// plain methods below so that it can be tested without a terminal.
type state struct {
	me       string
	convs    []*conv // latest activity first
	open     string  // peer of the open conversation, "" for none
	presence map[string]string
	typing   map[typist]time.Time // who typed where, when they last said so
	status   string
	online   bool
	groups   map[string]groupInfo // my groups by ID, from the groups list
	// former are the names of groups that were mine and left the list
	// (I left, or was removed): their chats keep the name and say so.
	former map[string]string

	// resumed: this start resumed from a saved sync cursor; away are the
	// messages that came in while the client was not running, shown
	// until a conversation is opened.
	resumed bool
	away    []edgechat.Message
}

func newState(me string) *state {
	return &state{me: me, presence: map[string]string{}, typing: map[typist]time.Time{}, groups: map[string]groupInfo{}}
}

// typist is someone typing in a conversation (its key: the peer
// themselves, or a group's).
type typist struct{ conv, from string }

// title is how a conversation is named on the screen: the peer's user
// ID, or "# " and the group's name (its ID while the name is unknown).
func (s *state) title(key string) string {
	gid, ok := groupOf(key)
	if !ok {
		return safeText(key, false)
	}
	if g, known := s.groups[gid]; known && strings.TrimSpace(g.name) != "" {
		return "# " + displayName(g.name)
	}
	if name := s.former[gid]; strings.TrimSpace(name) != "" {
		return "# " + displayName(name)
	}
	return "# " + safeText(gid, false)
}

// setGroups merges the list of my groups: each is listed, with or
// without messages; a group no longer in it (I left or was removed) goes
// from the list unless it is open or shows messages (a list read just
// before I joined must not drop what came since).
func (s *state) setGroups(list []edgechat.Group) {
	now := make(map[string]groupInfo, len(list))
	for _, g := range list {
		now[g.ID] = groupInfo{name: g.Name, members: g.MemberCount}
		s.ensure(groupKey(g.ID))
		delete(s.former, g.ID)
	}
	for gid, g := range s.groups {
		if _, still := now[gid]; !still {
			if s.former == nil {
				s.former = map[string]string{}
			}
			s.former[gid] = g.name
		}
	}
	s.groups = now
	s.convs = slices.DeleteFunc(s.convs, func(c *conv) bool {
		gid, ok := groupOf(c.peer)
		_, mine := now[gid]
		return ok && !mine && c.peer != s.open && len(c.entries) == 0
	})
}

// formerGroup reports whether gid was one of my groups and is no more.
func (s *state) formerGroup(gid string) bool {
	_, ok := s.former[gid]
	return ok
}

// findGroup finds one of my groups by name (case-insensitive) or ID.
// It returns the matching IDs: none, one, or several of the same name.
func (s *state) findGroup(name string) []string {
	name = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), groupMark))
	if _, ok := s.groups[name]; ok {
		return []string{name}
	}
	var out []string
	for gid, g := range s.groups {
		if strings.EqualFold(strings.TrimSpace(g.name), name) {
			out = append(out, gid)
		}
	}
	slices.Sort(out)
	return out
}

func (s *state) conv(peer string) *conv {
	for _, c := range s.convs {
		if c.peer == peer {
			return c
		}
	}
	return nil
}

// ensure returns peer's conversation, creating an empty one at the end.
func (s *state) ensure(peer string) *conv {
	if c := s.conv(peer); c != nil {
		return c
	}
	c := &conv{peer: peer, hasMore: true}
	s.convs = append(s.convs, c)
	return c
}

// touch moves a conversation to the top of the list.
func (s *state) touch(c *conv, at time.Time) {
	if at.After(c.activity) {
		c.activity = at
	}
	slices.SortStableFunc(s.convs, func(a, b *conv) int { return b.activity.Compare(a.activity) })
}

// setConversations merges the server's conversation list.
func (s *state) setConversations(list []edgechat.Conversation) {
	for _, sc := range list {
		key := sc.Peer
		if sc.Group != "" {
			key = groupKey(sc.Group)
		}
		if key == "" {
			continue
		}
		c := s.ensure(key)
		if key != s.open {
			// The server counted up to its newest message; what came
			// here from the peer after that (before the list answered)
			// counts too.
			c.unread = sc.Unread
			for _, e := range c.entries {
				if e.ID != "" && e.From != s.me && edgechat.CompareIDs(e.ID, sc.LastMessage.ID) > 0 {
					c.unread++
				}
			}
		}
		if sc.LastMessage.ID != "" && (c.counted == "" || edgechat.CompareIDs(sc.LastMessage.ID, c.counted) > 0) {
			c.counted = sc.LastMessage.ID
		}
		if sc.LastMessage.ID != "" && (c.last.ID == "" || edgechat.CompareIDs(sc.LastMessage.ID, c.last.ID) > 0) {
			c.last = sc.LastMessage
		}
		s.touch(c, sc.LastMessage.Time)
	}
}

// openConv makes peer the open conversation and clears its unread count.
// It reports whether its history still has to be loaded.
func (s *state) openConv(peer string) (needHistory bool) {
	c := s.ensure(peer)
	s.open = peer
	c.unread = 0
	return !c.loaded
}

// receive adds a message from the server (live or caught up). It returns
// the conversation's peer and whether the message should be marked read
// (it is someone else's, in the open conversation).
func (s *state) receive(m edgechat.Message) (peer string, markRead bool) {
	peer = keyOf(m, s.me)
	if peer == "" {
		return "", false
	}
	c := s.ensure(peer)
	if !c.insert(m) {
		return peer, false // already shown
	}
	if edgechat.CompareIDs(m.ID, c.last.ID) > 0 || c.last.ID == "" {
		c.last = m
	}
	s.touch(c, m.Time)
	if m.From != s.me {
		delete(s.typing, typist{peer, m.From})
		if peer == s.open {
			return peer, true
		}
		if c.counted == "" || edgechat.CompareIDs(m.ID, c.counted) > 0 { // else the list counted it
			c.unread++
		}
	}
	return peer, false
}

// insert places a stored message in order, replacing my pending (or
// failed) entry with the same CID; it reports false when the ID is
// already there.
func (c *conv) insert(m edgechat.Message) bool {
	for i, e := range c.entries {
		if m.ID != "" && e.ID == m.ID {
			return false
		}
		// A failed one too: a send that gave up (ctx ended) may have
		// been stored all the same, and its copy says so.
		if (e.pending || e.failed != "") && m.CID != "" && e.CID == m.CID && e.From == m.From {
			c.entries = slices.Delete(c.entries, i, i+1)
			break
		}
	}
	// Stored messages sort by ID; pending ones stay after them.
	i := len(c.entries)
	for i > 0 && (c.entries[i-1].pending || c.entries[i-1].failed != "" || edgechat.CompareIDs(c.entries[i-1].ID, m.ID) > 0) {
		i--
	}
	c.entries = slices.Insert(c.entries, i, entry{Message: m})
	return true
}

// addPending shows a message of mine before the server has it.
func (s *state) addPending(peer, cid, body string, now time.Time) {
	c := s.ensure(peer)
	c.entries = append(c.entries, entry{Message: addressed(peer, edgechat.Message{From: s.me, CID: cid, Type: "text", Body: body, Time: now}), pending: true})
	s.touch(c, now)
}

// sent reconciles a pending message with what Send returned.
func (s *state) sent(peer string, m edgechat.Message) {
	c := s.conv(peer)
	if c == nil {
		return
	}
	if m.ID == "" { // stored, but its numbered copy has not arrived yet
		for i := range c.entries {
			if e := &c.entries[i]; e.pending && e.CID == m.CID {
				e.Body = m.Body
				e.uploading = false
				if m.Media != nil {
					e.Media = m.Media
				}
			}
		}
		return
	}
	s.receive(m)
}

// sendFailed marks a pending message as failed.
func (s *state) sendFailed(peer, cid string, err error) {
	c := s.conv(peer)
	if c == nil {
		return
	}
	for i := range c.entries {
		if e := &c.entries[i]; e.pending && e.CID == cid {
			e.pending = false
			e.failed = failure(err)
			if retryable(*e) && errors.Is(err, context.DeadlineExceeded) {
				// Not confirmed in time (the server away): it may
				// have been stored, so it goes again under its CID.
				e.failed = fmt.Sprintf("no answer from the server within %d minutes; /retry sends it again", int(sendTimeout/time.Minute))
			}
		}
	}
}

// undeliverable marks my message id of a conversation as refused for
// good by another region; one not shown here shows so with its history.
func (s *state) undeliverable(peer, id, reason string) {
	c := s.conv(peer)
	if c == nil {
		return
	}
	for i := range c.entries {
		if e := &c.entries[i]; e.ID == id {
			e.Status, e.Reason = "undeliverable", reason
		}
	}
}

// failure says why a send failed, in the server's words when it refused
// the message: its reason string without the MQTT reason's name before
// them ("topic name invalid: no such user" is "no such user").
func failure(err error) string {
	var pe *edgechat.PublishError
	if errors.As(err, &pe) {
		if pe.Text == "" {
			return fmt.Sprintf("the server refused it (0x%02x)", pe.Reason)
		}
		if _, words, ok := strings.Cut(pe.Text, ": "); ok && words != "" {
			return words
		}
		return pe.Text
	}
	return strings.TrimPrefix(err.Error(), "edgechat: ")
}

// retryable reports whether /retry sends a failed entry again: a text
// message of mine (an attachment is sent again with /attach).
func retryable(e entry) bool {
	return e.Type == "text" && e.Media == nil && !e.uploading
}

// retry makes the failed text messages of a conversation pending again,
// for sending under their CIDs, and returns them.
func (s *state) retry(peer string) []entry {
	c := s.conv(peer)
	if c == nil {
		return nil
	}
	var again []entry
	for i := range c.entries {
		if e := &c.entries[i]; e.failed != "" && retryable(*e) {
			e.failed, e.pending = "", true
			again = append(again, *e)
		}
	}
	return again
}

// prependHistory merges a page of history (newest first, as the server
// returns it) that is older than what is shown.
func (s *state) prependHistory(peer string, page []edgechat.Message, hasMore bool) (added int) {
	c := s.ensure(peer)
	c.loaded = true
	c.hasMore = hasMore
	for _, m := range page {
		if c.insert(m) {
			added++
			if edgechat.CompareIDs(m.ID, c.last.ID) > 0 || c.last.ID == "" {
				c.last = m
			}
		}
	}
	return added
}

// oldestID is the ID to page back from ("" for none).
func (s *state) oldestID(peer string) string {
	c := s.conv(peer)
	if c == nil {
		return ""
	}
	for _, e := range c.entries {
		if e.ID != "" {
			return e.ID
		}
	}
	return ""
}

// newestFromPeer is the newest ID of a message the peer sent me (in a
// group, of a message someone else sent), the upTo of a read receipt
// ("" for none).
func (s *state) newestFromPeer(peer string) string {
	c := s.conv(peer)
	if c == nil {
		return ""
	}
	_, group := groupOf(peer)
	for i := len(c.entries) - 1; i >= 0; i-- {
		if e := c.entries[i]; e.ID != "" && (e.From == peer || group && e.From != s.me) {
			return e.ID
		}
	}
	return ""
}

func (s *state) setPresence(uid, status string) { s.presence[uid] = status }

// setTyping records a typing notice: from started (or, stopped, stopped)
// typing to me (group "") or in group gid.
func (s *state) setTyping(from, gid string, stopped bool, now time.Time) {
	key := typist{from, from}
	if gid != "" {
		key.conv = groupKey(gid)
	}
	if stopped {
		delete(s.typing, key)
		return
	}
	s.typing[key] = now
}

// isTyping reports whether peer said they were typing to me within the
// last few seconds and has not said they stopped (a notice may be lost:
// it is shown no longer than typingShown).
func (s *state) isTyping(peer string, now time.Time) bool {
	t, ok := s.typing[typist{peer, peer}]
	return ok && now.Sub(t) < typingShown
}

// typists are who is typing in the conversation of key (a group's), as
// isTyping decides, in order of their user IDs.
func (s *state) typists(key string, now time.Time) []string {
	var out []string
	for k, t := range s.typing {
		if k.conv == key && now.Sub(t) < typingShown {
			out = append(out, k.from)
		}
	}
	slices.Sort(out)
	return out
}

// readElsewhere applies a read of mine made on any device (the SDK's
// OnRead): the conversation's unread count becomes the server's after
// the move, or the messages from others newer than the read that this
// client holds, whichever is more (both are counts of messages after the
// read that exist: the server's may predate one that arrived here
// since). The open conversation stays at 0: this client reads it.
func (s *state) readElsewhere(rs edgechat.ReadState) {
	key := rs.Peer
	if rs.Group != "" {
		key = groupKey(rs.Group)
	}
	c := s.conv(key)
	if c == nil || key == s.open || rs.UpTo == "" {
		return
	}
	newer := 0
	for _, e := range c.entries {
		if e.ID != "" && e.From != s.me && edgechat.CompareIDs(e.ID, rs.UpTo) > 0 {
			newer++
		}
	}
	if n := max(rs.Unread, newer); n < c.unread {
		c.unread = n
	}
}

const typingShown = 4 * time.Second

func (s *state) totalUnread() int {
	n := 0
	for _, c := range s.convs {
		n += c.unread
	}
	return n
}

// addPendingMedia shows an attachment of mine while it uploads; media is
// what is known locally (name, size, a kind guessed from the type) until
// the server's description arrives with the stored message.
func (s *state) addPendingMedia(peer, cid string, media edgechat.MediaInfo, caption string, now time.Time) {
	c := s.ensure(peer)
	m := addressed(peer, edgechat.Message{From: s.me, CID: cid, Type: "media", Body: caption, Media: &media, Time: now})
	c.entries = append(c.entries, entry{Message: m, pending: true, uploading: true, total: media.Size})
	s.touch(c, now)
}

// uploadProgress moves an attachment's progress bar.
func (s *state) uploadProgress(peer, cid string, sent, total int64) {
	c := s.conv(peer)
	if c == nil {
		return
	}
	for i := range c.entries {
		if e := &c.entries[i]; e.pending && e.uploading && e.CID == cid {
			e.sent, e.total = sent, total
		}
	}
}

// nthMedia returns the media of the n-th newest stored media message of
// a conversation (n >= 1), the target of /open-media.
func (s *state) nthMedia(peer string, n int) (edgechat.MediaInfo, bool) {
	c := s.conv(peer)
	if c == nil || n < 1 {
		return edgechat.MediaInfo{}, false
	}
	for i := len(c.entries) - 1; i >= 0; i-- {
		e := c.entries[i]
		if e.ID == "" || e.Media == nil || e.Media.ID == "" {
			continue // mine still on its way has nothing to download yet
		}
		if n--; n == 0 {
			return *e.Media, true
		}
	}
	return edgechat.MediaInfo{}, false
}

// arrive takes the messages the SDK delivered before the screen came
// up. After a start from a saved sync cursor (resumed) they are what
// came in while the client was not running: kept in away, oldest first,
// to be shown together.
func (s *state) arrive(msgs []edgechat.Message, resumed bool) {
	s.resumed = resumed
	for _, m := range msgs {
		s.receive(m)
		if resumed && m.ID != "" {
			s.away = append(s.away, m)
		}
	}
	slices.SortStableFunc(s.away, func(a, b edgechat.Message) int { return edgechat.CompareIDs(a.ID, b.ID) })
}
