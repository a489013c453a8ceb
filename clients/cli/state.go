package cli

import (
	"slices"
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

// conv is one conversation as the client shows it.
type conv struct {
	peer     string
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
	typing   map[string]time.Time // peer -> when they last said they were typing
	status   string
	online   bool
}

func newState(me string) *state {
	return &state{me: me, presence: map[string]string{}, typing: map[string]time.Time{}}
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
		if sc.Peer == "" {
			continue // groups are not shown yet
		}
		c := s.ensure(sc.Peer)
		if sc.Peer != s.open {
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
	if m.Group != "" {
		// Groups are not shown yet (see setConversations): the peer of
		// a group message would be the group's ID, taken for a user's.
		return "", false
	}
	peer = m.Peer(s.me)
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
		delete(s.typing, m.From)
		if peer == s.open {
			return peer, true
		}
		if c.counted == "" || edgechat.CompareIDs(m.ID, c.counted) > 0 { // else the list counted it
			c.unread++
		}
	}
	return peer, false
}

// insert places a stored message in order, replacing my pending entry with
// the same CID; it reports false when the ID is already there.
func (c *conv) insert(m edgechat.Message) bool {
	for i, e := range c.entries {
		if m.ID != "" && e.ID == m.ID {
			return false
		}
		if e.pending && m.CID != "" && e.CID == m.CID && e.From == m.From {
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
	c.entries = append(c.entries, entry{Message: edgechat.Message{From: s.me, To: peer, CID: cid, Type: "text", Body: body, Time: now}, pending: true})
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
		if c.entries[i].pending && c.entries[i].CID == cid {
			c.entries[i].pending = false
			c.entries[i].failed = err.Error()
		}
	}
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

// newestFromPeer is the newest ID of a message the peer sent me, the
// upTo of a read receipt ("" for none).
func (s *state) newestFromPeer(peer string) string {
	c := s.conv(peer)
	if c == nil {
		return ""
	}
	for i := len(c.entries) - 1; i >= 0; i-- {
		if e := c.entries[i]; e.ID != "" && e.From == peer {
			return e.ID
		}
	}
	return ""
}

func (s *state) setPresence(uid, status string) { s.presence[uid] = status }

func (s *state) setTyping(from string, now time.Time) { s.typing[from] = now }

// isTyping reports whether peer said they were typing within the last
// few seconds (typing notices are not repeated when typing stops).
func (s *state) isTyping(peer string, now time.Time) bool {
	t, ok := s.typing[peer]
	return ok && now.Sub(t) < typingShown
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
	m := edgechat.Message{From: s.me, To: peer, CID: cid, Type: "media", Body: caption, Media: &media, Time: now}
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
