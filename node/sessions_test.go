package node_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// Ending one session on a real two-node cluster (a lost phone), asked of
// the other node: the phone's MQTT connection closes and its tokens are
// refused on both nodes; the laptop's session and connection go on.
func TestEndSessionOnACluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	leader, follower := nodes[0], nodes[1]
	leader.NewUser(t, "alice")
	type tokens struct {
		AccessToken  string `json:"accessToken"`
		RefreshToken string `json:"refreshToken"`
	}
	login := func(n *nodetest.Node, device string) tokens {
		t.Helper()
		var tk tokens
		if st := api(t, n, "", http.MethodPost, "/auth/login", map[string]string{"username": "alice", "password": nodetest.Password("alice"), "device": device}, &tk); st != http.StatusOK {
			t.Fatalf("login from %s: %d", device, st)
		}
		return tk
	}
	phone := login(leader, "phone")
	phoneConn, _, err := mqtttest.Dial(t, leader.MQTTURL, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: phone.AccessToken})
	if err != nil {
		t.Fatal(err)
	}
	phoneConn.MustSub(t, "user/alice/events")
	// A sign-in through the other node is told to the phone.
	laptop := login(follower, "laptop")
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		for _, p := range phoneConn.Received("user/alice/events") {
			var ev struct {
				Type string
				Data struct{ ID, Device, Agent string }
			}
			if json.Unmarshal(p.Payload, &ev) == nil && ev.Type == "session.created" && ev.Data.Device == "laptop" && ev.Data.ID != "" && ev.Data.Agent != "" {
				return nil
			}
		}
		return errors.New("the phone was not told of the laptop's sign-in")
	})
	laptopConn, _, err := mqtttest.Dial(t, leader.MQTTURL, mqtttest.Options{ClientID: "alice/laptop", Username: "alice", Password: laptop.AccessToken})
	if err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Sessions []struct {
			ID      string `json:"id"`
			Device  string `json:"device"`
			Current bool   `json:"current"`
		} `json:"sessions"`
	}
	if st := api(t, follower, laptop.AccessToken, http.MethodGet, "/auth/sessions", nil, &listed); st != http.StatusOK || len(listed.Sessions) != 3 { // NewUser signed in once too
		t.Fatalf("sessions: %d %+v", st, listed)
	}
	phoneSID := ""
	for _, s := range listed.Sessions {
		if s.Device == "phone" && !s.Current {
			phoneSID = s.ID
		}
	}
	if phoneSID == "" {
		t.Fatalf("no phone session among %+v", listed.Sessions)
	}
	if st := api(t, follower, laptop.AccessToken, http.MethodDelete, "/auth/sessions/"+phoneSID, nil, nil); st != http.StatusNoContent {
		t.Fatalf("end the phone's session: %d", st)
	}
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, ok := phoneConn.ServerDisconnect(); !ok {
			return errors.New("the phone's connection is still open")
		}
		return nil
	})
	if _, ok := laptopConn.ServerDisconnect(); ok {
		t.Fatal("the laptop's connection was closed")
	}
	for _, n := range nodes {
		if st := api(t, n, phone.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusUnauthorized {
			t.Fatalf("the phone's access token on %s: %d", n.HTTPURL, st)
		}
		if st := api(t, n, laptop.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusOK {
			t.Fatalf("the laptop's access token on %s: %d", n.HTTPURL, st)
		}
	}
	if st := api(t, leader, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": phone.RefreshToken}, nil); st != http.StatusUnauthorized {
		t.Fatalf("the phone's refresh: %d", st)
	}
}
