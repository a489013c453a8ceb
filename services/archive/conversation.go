package archive

import "sync"

// conversationHooks are the functions OnConversationStarted registered.
type conversationHooks struct {
	mu  sync.RWMutex
	fns []func(uid, peer string)
}

// tell calls every registered function for each {uid, peer} of sides.
func (h *conversationHooks) tell(sides [][2]string) {
	if h == nil || len(sides) == 0 {
		return
	}
	h.mu.RLock()
	fns := h.fns
	h.mu.RUnlock()
	for _, pt := range sides {
		for _, fn := range fns {
			fn(pt[0], pt[1])
		}
	}
}

// OnConversationStarted registers fn to be called on this node, after
// the commit, when uid has a direct conversation with peer for the first
// time (its first message, either way, is stored): uid may see peer's
// presence from now on (the visibility rule, HasConversation). It is
// called once for each side (uid and peer swapped), never for a
// conversation with oneself. The broker hands the current
// presence/{peer} to uid's sessions that kept a subscription to it while
// it was not visible. fn runs on the FSM's apply path: it must be quick
// and must not propose.
func (s *Service) OnConversationStarted(fn func(uid, peer string)) {
	h := s.st.started
	h.mu.Lock()
	h.fns = append(h.fns, fn)
	h.mu.Unlock()
}
