package users

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/internal/wire"
)

// The FSM handlers take a name with a joiner (U+200D, U+200C) only when
// the feature level committed before their entry allows it, so that
// nodes of two versions in a rolling upgrade agree: at level 0 they
// refuse it as a node of an earlier version does, and write nothing.
func TestHandlersTakeJoinersOnlyFromFeatureLevel1(t *testing.T) {
	e := newEnv(t)
	featurelevel.Register(e.prop.FSM)
	e.users("owen", "ann")
	g := e.createGroup("owen", "T", "ann")
	const name = "Sara 👩\u200d💻"
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cmds := []struct {
		typ     byte
		payload []byte
		want    error
	}{
		{wire.CmdProfilePut, js(map[string]any{"uid": "ann", "displayName": name, "at": "2026-01-01T00:00:00Z"}), ErrInvalidDisplayName},
		{wire.CmdGroupCreate, js(map[string]any{"gid": "joiners", "owner": "ann", "name": name, "max": 10, "at": "2026-01-01T00:00:00Z"}), ErrInvalidGroupName},
		{wire.CmdGroupUpdate, js(map[string]any{"gid": g.ID, "by": "owen", "name": name}), ErrInvalidGroupName},
	}
	before := e.state()
	for _, c := range cmds {
		if _, err := e.prop.Propose(t.Context(), c.typ, c.payload); !errors.Is(err, c.want) || !strings.Contains(err.Error(), "being upgraded") {
			t.Errorf("level 0: %#x %s: %v, want %v (being upgraded)", c.typ, c.payload, err, c.want)
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("refused commands wrote state")
	}

	if _, err := e.prop.Propose(t.Context(), wire.CmdFeatureLevel, featurelevel.Payload(featurelevel.Joiners)); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if _, err := e.prop.Propose(t.Context(), c.typ, c.payload); err != nil {
			t.Errorf("level 1: %#x %s: %v", c.typ, c.payload, err)
		}
	}
	if p, err := e.svc.Profile("ann"); err != nil || p.DisplayName != name {
		t.Errorf("ann's profile: %q %v", p.DisplayName, err)
	}
	// Search finds her by the name with the joiner.
	if found, _, err := e.svc.Search("sara 👩\u200d", "", 10); err != nil || len(found) != 1 || found[0].UserID != "ann" {
		t.Errorf("search with a joiner: %+v %v", found, err)
	}
	// Other format characters stay refused.
	for _, bad := range []string{"ab\u202ecd", "a\u2066b", "a\u200fb", "\u200dab", "ab\u200c"} {
		_, err := e.prop.Propose(t.Context(), wire.CmdProfilePut, js(map[string]any{"uid": "ann", "displayName": bad, "at": "2026-01-01T00:00:00Z"}))
		if !errors.Is(err, ErrInvalidDisplayName) {
			t.Errorf("level 1: display name %q: %v, want %v", bad, err, ErrInvalidDisplayName)
		}
	}
}
