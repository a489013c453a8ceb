package cluster

import (
	"io"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// Member changes are announced, not polled: the broker's forwarder and
// the presence service used to reload the member list twice a second on
// every node, which kept an idle cluster busy. Now Raft tells us: a
// configuration entry applied (raft.ConfigurationStore on the FSM), a
// snapshot restored, or a new leader (Member.Leader changes).

// memberWatch hands out a channel that is closed at the next change.
type memberWatch struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *memberWatch) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *memberWatch) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// MembersChanged returns a channel that is closed the next time the
// member list may have changed (a server added or removed, an address
// changed, a new leader). Call it again after it fires, before reading
// Members, so that no change is missed:
//
//	for {
//		ch := r.MembersChanged()
//		use(r.Members())
//		<-ch
//	}
func (n *Raft) MembersChanged() <-chan struct{} { return n.memberWatch.wait() }

// watchedFSM is the FSM as Raft sees it: the node's FSM plus the
// ConfigurationStore hook that announces configuration changes.
type watchedFSM struct {
	*fsm.FSM
	changed func()
}

var _ raft.ConfigurationStore = watchedFSM{}

// StoreConfiguration is called by Raft when a configuration entry is
// applied (on every server, in log order).
func (w watchedFSM) StoreConfiguration(uint64, raft.Configuration) { w.changed() }

// Restore restores a snapshot, which may carry another configuration.
func (w watchedFSM) Restore(rc io.ReadCloser) error {
	defer w.changed()
	return w.FSM.Restore(rc)
}
