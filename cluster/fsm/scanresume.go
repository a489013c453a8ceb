package fsm

import (
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// ScanResume remembers where the last step of a bounded delete walk
// stopped, so that the next step seeks there instead of scanning its
// prefix from the start.
//
// The walks it serves (dropping a departed node's registry entries or
// routes) are commands that delete the first N matching keys of a
// prefix in key order and are proposed again until none are left. Each
// step that rescans from the start visits every key the earlier steps
// skipped, so dropping k×N keys among M visits about k×M: seconds of
// every node's state machine, in steps of ~100 ms, at a few hundred
// thousand clients. Seeking to where the last step stopped visits each
// key once over the whole walk.
//
// Both ways delete the same keys, so nodes with and without a mark (one
// restarted meanwhile, one that never ran a step) stay identical: every
// matching key below a mark was deleted by the step that set it. What
// could add a matching key below it must call Forget (when it is applied,
// and again after it commits, so that a mark set by an earlier entry of
// the same batch does not outlive it), and a mark is set only after its
// step committed (Mark from AfterCommit): a step whose transaction the
// FSM threw away and applied again must not leave one.
type ScanResume struct {
	mu sync.Mutex
	at map[string][]byte
}

// Seek is where walk what should start: the key its last committed step
// stopped at, or nil (from the start).
func (r *ScanResume) Seek(what string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at[what]
}

// Start positions it where walk what should start (Seek, else the
// start of its prefix).
func (r *ScanResume) Start(it *badger.Iterator, what string) {
	if at := r.Seek(what); at != nil {
		it.Seek(at)
		return
	}
	it.Rewind()
}

// Mark records, after a step of walk what committed, the key it stopped
// at (the first matching key it left; nil when it left none).
func (r *ScanResume) Mark(what string, key []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == nil {
		delete(r.at, what)
		return
	}
	if r.at == nil {
		r.at = make(map[string][]byte)
	}
	r.at[what] = key
}

// Forget drops walk what's mark: a key it matches may have been added.
func (r *ScanResume) Forget(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.at, what)
}

// Reset drops every mark (after a snapshot restore).
func (r *ScanResume) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.at)
}
