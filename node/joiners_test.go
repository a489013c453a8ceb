package node_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// Names that need the zero-width joiner (U+200D) or non-joiner (U+200C).
const (
	saraCoder  = "Sara 👩\u200d💻"
	rainbow    = "🏳️\u200d🌈"
	mohammadR  = "محمد\u200cرضا"
	family     = "👨\u200d👩\u200d👧"
	bidiInName = "ab\u202ecd"
)

func featureLevel(t testing.TB, n *nodetest.Node, adminTok string) (uint32, error) {
	t.Helper()
	var st struct {
		FeatureLevel *uint32 `json:"featureLevel"`
	}
	if code := api(t, n, adminTok, "GET", "/cluster/status", nil, &st); code != 200 || st.FeatureLevel == nil {
		return 0, fmt.Errorf("%s: GET /cluster/status: %d, featureLevel %v", n.Config.NodeID, code, st.FeatureLevel)
	}
	return *st.FeatureLevel, nil
}

func waitFeatureLevel(t *testing.T, nodes []*nodetest.Node, adminTok string, want uint32) {
	t.Helper()
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			l, err := featureLevel(t, n, adminTok)
			if err != nil {
				return err
			}
			if l != want {
				return fmt.Errorf("%s: feature level %d, want %d", n.Config.NodeID, l, want)
			}
		}
		return nil
	})
}

// Once every node supports feature level 1 the leader raises it, and
// display names and group names with joiners are accepted through every
// node; other format characters are still refused.
func TestNamesWithJoinersAreAcceptedOnceTheClusterIsUpgraded(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) { c.FeatureLevelEvery = 100 * time.Millisecond }))
	adminTok := nodes[0].NewUser(t, "root")
	nodes[0].NewUser(t, "alice")
	waitFeatureLevel(t, nodes, adminTok, featurelevel.Supported)

	for i, name := range []string{saraCoder, mohammadR, family} {
		n := nodes[i]
		tok := n.Token(t, "alice")
		var p struct {
			DisplayName string `json:"displayName"`
		}
		var e apiError
		if code := api(t, n, tok, "PATCH", "/user/me", map[string]any{"displayName": name}, &p); code != 200 || p.DisplayName != name {
			api(t, n, tok, "PATCH", "/user/me", map[string]any{"displayName": name}, &e)
			t.Fatalf("%s: PATCH /user/me %q: %d %q %+v", n.Config.NodeID, name, code, p.DisplayName, e)
		}
		var g struct {
			GID  string `json:"groupId"`
			Name string `json:"name"`
		}
		if code := api(t, n, tok, "POST", "/user/groups", map[string]any{"name": name}, &g); code != 201 || g.Name != name {
			t.Fatalf("%s: POST /user/groups %q: %d %+v", n.Config.NodeID, name, code, g)
		}
		if code := api(t, n, tok, "PATCH", "/user/groups/"+g.GID, map[string]any{"name": rainbow}, &g); code != 200 || g.Name != rainbow {
			t.Fatalf("%s: PATCH /user/groups/%s %q: %d %+v", n.Config.NodeID, g.GID, rainbow, code, g)
		}
	}
	// The last name reached every node.
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			var p struct {
				DisplayName string `json:"displayName"`
			}
			if code := api(t, n, adminTok, "GET", "/user/alice", nil, &p); code != 200 || p.DisplayName != family {
				return fmt.Errorf("%s: GET /user/alice: %d %q", n.Config.NodeID, code, p.DisplayName)
			}
			return nil
		})
	}

	tok := nodes[1].Token(t, "alice")
	for _, bad := range []string{bidiInName, "\u200dab", "ab\u200c", "\u200d", "a\u200eb", "a\u2066b"} {
		var e apiError
		if code := api(t, nodes[1], tok, "PATCH", "/user/me", map[string]any{"displayName": bad}, &e); code != 400 || e.Error.Code != "invalid_display_name" {
			t.Errorf("PATCH /user/me %q: %d %+v, want 400 invalid_display_name", bad, code, e)
		}
		if code := api(t, nodes[1], tok, "POST", "/user/groups", map[string]any{"name": bad}, &e); code != 400 || e.Error.Code != "invalid_group_name" {
			t.Errorf("POST /user/groups %q: %d %+v, want 400 invalid_group_name", bad, code, e)
		}
	}
}

// A rolling upgrade: a cluster of an earlier version (every node
// reports level 0) has two of its three nodes upgraded. While the third
// still reports 0 the level stays 0 and every node refuses names with
// joiners, saying that the cluster is being upgraded; once the third is
// upgraded too, the level goes up and the names are accepted.
func TestNamesWithJoinersAreRefusedWhileAMemberIsOlder(t *testing.T) {
	var levels [3]atomic.Uint32 // what n1..n3 report: 0, "an earlier version", until upgraded
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) {
		c.FeatureLevelEvery = 50 * time.Millisecond
		i := int(c.NodeID[1] - '1')
		c.ReportFeatureLevel = levels[i].Load
	}))
	levels[0].Store(1)
	levels[1].Store(1)
	adminTok := nodes[0].NewUser(t, "root")
	nodes[0].NewUser(t, "alice")
	// The leader has asked every member several times since n1 and n2
	// were upgraded.
	var before int64
	for _, n := range nodes {
		before += node.FeatureLevelChecks(n.Node)
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var checks int64
		for _, n := range nodes {
			checks += node.FeatureLevelChecks(n.Node)
		}
		if checks < before+5 {
			return fmt.Errorf("%d complete checks of the members' levels", checks)
		}
		return nil
	})
	for _, n := range nodes {
		if l, err := featureLevel(t, n, adminTok); err != nil || l != 0 {
			t.Fatalf("%s: feature level %d (%v) with n3 at level 0, want 0", n.Config.NodeID, l, err)
		}
		tok := n.Token(t, "alice")
		var e apiError
		code := api(t, n, tok, "PATCH", "/user/me", map[string]any{"displayName": saraCoder}, &e)
		if code != 400 || e.Error.Code != "invalid_display_name" || !strings.Contains(e.Error.Message, "being upgraded") {
			t.Errorf("%s: PATCH /user/me %q: %d %+v, want 400 invalid_display_name (being upgraded)", n.Config.NodeID, saraCoder, code, e)
		}
		e = apiError{}
		code = api(t, n, tok, "POST", "/user/groups", map[string]any{"name": saraCoder}, &e)
		if code != 400 || e.Error.Code != "invalid_group_name" || !strings.Contains(e.Error.Message, "being upgraded") {
			t.Errorf("%s: POST /user/groups %q: %d %+v, want 400 invalid_group_name (being upgraded)", n.Config.NodeID, saraCoder, code, e)
		}
		var g struct {
			GID string `json:"groupId"`
		}
		if code := api(t, n, tok, "POST", "/user/groups", map[string]any{"name": "plain"}, &g); code != 201 {
			t.Fatalf("%s: POST /user/groups plain: %d", n.Config.NodeID, code)
		}
		e = apiError{}
		code = api(t, n, tok, "PATCH", "/user/groups/"+g.GID, map[string]any{"name": mohammadR}, &e)
		if code != 400 || e.Error.Code != "invalid_group_name" || !strings.Contains(e.Error.Message, "being upgraded") {
			t.Errorf("%s: PATCH /user/groups/%s %q: %d %+v, want 400 invalid_group_name (being upgraded)", n.Config.NodeID, g.GID, mohammadR, code, e)
		}
	}

	levels[2].Store(1) // n3 upgraded
	waitFeatureLevel(t, nodes, adminTok, 1)
	tok := nodes[2].Token(t, "alice")
	var p struct {
		DisplayName string `json:"displayName"`
	}
	if code := api(t, nodes[2], tok, "PATCH", "/user/me", map[string]any{"displayName": saraCoder}, &p); code != 200 || p.DisplayName != saraCoder {
		t.Fatalf("after the upgrade: PATCH /user/me %q: %d %q", saraCoder, code, p.DisplayName)
	}
}

// The first sign-in through a provider keeps the provider's name with a
// joiner once the level allows it; before, it falls back to the user ID
// (as for any name the rules refuse).
func TestOIDCFirstSignInKeepsANameWithJoinersFromLevel1(t *testing.T) {
	for _, level := range []uint32{0, 1} {
		t.Run(fmt.Sprintf("level=%d", level), func(t *testing.T) {
			op := idptest.Start(t)
			n := nodetest.StartNode(t, withOIDC(op), nodetest.WithConfig(func(c *node.Config) {
				c.FeatureLevelEvery = 50 * time.Millisecond
				c.ReportFeatureLevel = func() uint32 { return level }
			}))
			adminTok := n.NewUser(t, "root")
			if level > 0 {
				waitFeatureLevel(t, []*nodetest.Node{n}, adminTok, level)
			}
			status, got := exchange(t, n, "corp", op.Token(idptest.Claims{"sub": "s-1", "preferred_username": "sara", "name": saraCoder}))
			if status != 200 {
				t.Fatalf("exchange: %d %+v", status, got)
			}
			var me struct {
				DisplayName string `json:"displayName"`
			}
			want := map[uint32]string{0: "sara", 1: saraCoder}[level]
			if st := api(t, n, got.AccessToken, "GET", "/user/me", nil, &me); st != 200 || me.DisplayName != want {
				t.Fatalf("GET /user/me: %d %q, want %q", st, me.DisplayName, want)
			}
		})
	}
}
