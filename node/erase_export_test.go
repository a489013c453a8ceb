package node

import (
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
)

// DumpState returns every key under prefix of n's database with its
// value (the applied index left out): what the account-erasure tests
// search for the erased user and compare across nodes.
func DumpState(t testing.TB, n *Node, prefix string) map[string]string {
	t.Helper()
	return fsmtest.Dump(t, n.db, prefix)
}
