package region_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A link that cannot connect says why in its status (GET /admin/links,
// `edgechat link status`): by hand, two regions whose secret files
// differed showed "down" on both sides and nothing more, and the
// dialling side logged its failures at debug level only (the operator
// had to find "region link refused: wrong secret" in the OTHER region's
// log). The other region's reason names the secret among the causes:
// it said "not a link of this region" of a configured link whose
// secret was wrong (it still does not tell which: a stranger learns
// nothing of the links configured).
func TestALinkThatCannotConnectSaysWhy(t *testing.T) {
	eu, _ := startRegions(t, 1, "eu", "us", map[string]string{"eu": "not-the-secret-us-holds!"})
	adminTok := eu.newUser(t, "alice") // the first account is an admin
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var a struct {
			Links []struct {
				State string `json:"state"`
				Error string `json:"error"`
			} `json:"links"`
		}
		if c := call(t, eu.nodes[0], adminTok, "GET", "/admin/links", nil, &a); c != http.StatusOK || len(a.Links) != 1 {
			return fmt.Errorf("GET /admin/links: %d %+v", c, a)
		}
		l := a.Links[0]
		if l.State != "down" {
			return fmt.Errorf("link state %q", l.State)
		}
		if !strings.Contains(l.Error, "bad username or password") {
			return fmt.Errorf("a link refused for its secret shows error %q", l.Error)
		}
		if !strings.Contains(l.Error, "secret") {
			return fmt.Errorf("a link refused for its secret shows error %q, which does not name the secret", l.Error)
		}
		if strings.Count(l.Error, "bad username or password") != 1 {
			t.Fatalf("the error says the other region's reason more than once: %q", l.Error)
		}
		return nil
	})

}
