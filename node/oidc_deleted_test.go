package node_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// A user who deletes an account made through a provider does not get a
// new one from an app that still holds the provider's token of before:
// the phone, connected with it, is disconnected by the deletion and
// reconnects with the same token, which is refused (0x86) and makes no
// account (which would store the provider's name, email and picture
// again and be listed to others, though the user just asked to leave).
// A token the provider issues after the deletion is a new sign-in: it
// makes the new account, as documented.
func TestOIDCConnectWithATokenOfBeforeTheDeletionMakesNoAccount(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op))
	addr := n.MQTTURL[len("tcp://"):]
	old := op.Token(idptest.Claims{"sub": "d-1", "preferred_username": "dora", "iat": time.Now().Add(-5 * time.Second).Unix()})
	phone := mqtttest.MustDial(t, addr, mqtttest.Options{ClientID: "dora/phone", Username: "dora", Password: old})
	status, got := exchange(t, n, "corp", old)
	if status != http.StatusOK || got.UserID != "dora" {
		t.Fatalf("exchange: %d %+v", status, got)
	}
	if st := api(t, n, got.AccessToken, http.MethodDelete, "/user/me", map[string]string{"provider": "corp", "subjectToken": old}, nil); st != 202 {
		t.Fatalf("DELETE /user/me: %d", st)
	}
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, ok := phone.ServerDisconnect(); !ok {
			return errors.New("the phone's connection is still open")
		}
		return nil
	})
	before := accounts(t, n)
	// The phone reconnects as it would, under the name it had, and under
	// the name a new account would get.
	for _, user := range []string{"dora", "dora2"} {
		if code := connack(t, addr, user+"/phone", user, old); code != 0x86 {
			t.Errorf("CONNECT as %s with the provider's token of before the deletion: CONNACK %#x, want 0x86", user, code)
		}
	}
	if c := accounts(t, n); c != before {
		t.Fatalf("%d accounts after the reconnections, want %d: a CONNECT with the old token made a new account", c, before)
	}
	fresh := op.Token(idptest.Claims{"sub": "d-1", "preferred_username": "dora", "iat": time.Now().Add(2 * time.Second).Unix()})
	if status, again := exchange(t, n, "corp", fresh); status != http.StatusOK || again.UserID != "dora2" {
		t.Fatalf("a sign-in with a token issued after the deletion: %d %+v, want the new account dora2", status, again)
	}
}
