package node_test

import (
	"net"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The node's own web app opens MQTT over WebSocket to the host that
// served it. With --allowed-origins set (to let another site's app in)
// that same-host page was refused (403) unless its host happened to be
// one of the cluster's advertised origins: behind a load balancer, or
// reached by a name rather than the bound address, the built-in web
// client stopped working the moment another origin was allowed. The
// allow-list adds to the same host; foreign origins stay refused.
func TestAllowedOriginsKeepTheSameHost(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.AllowedOrigins = []string{"https://app.example.com"}
	}))
	_, port, err := net.SplitHostPort(n.Node.Gateway.Addr())
	if err != nil {
		t.Fatal(err)
	}
	host := net.JoinHostPort("localhost", port) // the page's host: not the bound 127.0.0.1
	dial := func(origin string) int {
		t.Helper()
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}}
		ws, resp, err := d.Dial("ws://"+host+"/mqtt", http.Header{"Origin": {origin}})
		if err == nil {
			_ = ws.Close()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial with origin %s: %v", origin, err)
		}
		return resp.StatusCode
	}
	if st := dial("http://" + host); st != http.StatusSwitchingProtocols {
		t.Errorf("the node's own page (origin http://%s): %d, want 101", host, st)
	}
	if st := dial("https://app.example.com"); st != http.StatusSwitchingProtocols {
		t.Errorf("an allowed origin: %d, want 101", st)
	}
	if st := dial("https://evil.example.com"); st != http.StatusForbidden {
		t.Errorf("a foreign origin: %d, want 403", st)
	}
}
