package fsm

import (
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/testutil"
)

// ApplyingFor reports an apply that does not end (a database that cannot
// write; the node is then not ready), and nothing between entries.
func TestApplyingForReportsAnApplyThatLasts(t *testing.T) {
	f := New(openDB(t), testutil.QuietLogger())
	release := make(chan struct{})
	const cmdWait byte = 0x31
	f.Register(cmdWait, func(*badger.Txn, Position, []byte) (any, error) {
		<-release
		return nil, nil
	})
	if d := f.ApplyingFor(); d != 0 {
		t.Fatalf("ApplyingFor %v before any entry", d)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Apply(entry(1, Command{Type: cmdWait}))
	}()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if d := f.ApplyingFor(); d < 50*time.Millisecond {
			return fmt.Errorf("applying for %v", d)
		}
		return nil
	})
	close(release)
	<-done
	if d := f.ApplyingFor(); d != 0 {
		t.Fatalf("ApplyingFor %v after the entry was applied", d)
	}
}
