package archive

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/internal/wire"
)

// The owner ID is refused below feature level 2 (a node of an earlier
// version would skip the command), and set only once: a second one
// answers the first.
func TestArchiveOwnerIsSetOnceFromLevel2(t *testing.T) {
	e := newEnv(t)
	featurelevel.Register(e.f)
	ctx := context.Background()
	first, second := bytes.Repeat([]byte{1}, ownerIDLen), bytes.Repeat([]byte{2}, ownerIDLen)
	if _, err := e.prop.Propose(ctx, wire.CmdArchiveOwner, first); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("an owner at level 0: %v, want it refused", err)
	}
	if _, err := e.prop.Propose(ctx, wire.CmdFeatureLevel, featurelevel.Payload(featurelevel.ArchiveOwner)); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{first, second} {
		v, err := e.prop.Propose(ctx, wire.CmdArchiveOwner, p)
		if err != nil || v != ownerSet("01010101010101010101010101010101") {
			t.Fatalf("owner: %v %v, want the first one", v, err)
		}
	}
	if _, err := e.prop.Propose(ctx, wire.CmdArchiveOwner, first[:3]); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("a short owner ID: %v", err)
	}
}
