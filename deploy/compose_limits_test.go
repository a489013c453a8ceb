package deploy

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/services/gateway"
)

// Behind compose's haproxy (mode tcp) every client reaches a node from
// haproxy's address, so the node's per-client-IP limits are shared by all
// the clients routed to it. compose.yaml raised the MQTT connection limit
// for that, but not the HTTP ones: the whole load balancer had 50 HTTP
// requests/s per node (a few browsers loading the web app) and 5 sign-ins
// or registrations per second (HTTP 429 for everyone else).
func TestComposeRaisesPerIPLimitsBehindTheTCPBalancer(t *testing.T) {
	docs := readYAML(t, deployFile("compose.yaml"))
	defMQTT, _ := node.ParseRate(node.Defaults().MQTTConnectRate)
	defAuth := gateway.DefaultRateLimits()[httpapi.ClassAuth]
	n := 0
	for name, s := range getMap(docs[0], "services") {
		if getString(s, "build", "dockerfile") != "deploy/Dockerfile" && !strings.HasPrefix(getString(s, "image"), "edgechat") {
			continue
		}
		n++
		inv := invocation{where: "compose.yaml service " + name, env: imageEnv(t)}
		for _, a := range getList(s, "command") {
			inv.args = append(inv.args, composeExpand(a.(string)))
		}
		for k, v := range getMap(s, "environment") {
			inv.env[k] = composeExpand(v.(string))
		}
		cfg := checkInvocation(t, inv)
		if mqtt, _ := node.ParseRate(cfg.MQTTConnectRate); !mqtt.IsUnlimited() && mqtt.Rate <= defMQTT.Rate {
			t.Errorf("%s: MQTT connect rate %s: not raised for the clients behind haproxy", name, cfg.MQTTConnectRate)
		}
		perIP, classes, err := cfg.HTTPRateLimits()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !perIP.IsUnlimited() && perIP.Rate <= gateway.DefaultPerIPRate {
			t.Errorf("%s: HTTP per-IP limit (http rate all) %v: not raised for the clients behind haproxy", name, perIP)
		}
		if a, ok := classes[httpapi.ClassAuth]; !ok || (!a.IsUnlimited() && a.Rate <= defAuth.Rate) {
			t.Errorf("%s: HTTP auth limit (per IP on sign-in) %v: not raised for the clients behind haproxy", name, a)
		}
	}
	if n != 3 {
		t.Fatalf("want 3 edgechat services, have %d", n)
	}
}
