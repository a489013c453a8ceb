package node

import (
	"testing"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/services/clusterapi"
)

// The base URL a member's own requests use for another member: where it
// listens, with its cluster address's host for a wildcard bind (the
// Kubernetes ConfigMap's http_addr ":8080"), and its public URL from a
// member that gives no listening address (HTTPS with an advertised URL,
// an earlier version).
func TestPeerHTTPURL(t *testing.T) {
	m := cluster.Member{Name: "n2", Addr: "edgechat-1.edgechat:7946"}
	for _, c := range []struct{ peer, want string }{
		{"http://[::]:8080", "http://edgechat-1.edgechat:8080"},
		{"http://0.0.0.0:8080", "http://edgechat-1.edgechat:8080"},
		{"https://[::]:8443", "https://edgechat-1.edgechat:8443"},
		{"http://10.0.0.7:8080", "http://10.0.0.7:8080"},
		{"http://[fd00::7]:8080", "http://[fd00::7]:8080"},
		{"", "https://chat.example.com"},
		{"http://no-port", "https://chat.example.com"},
	} {
		info := clusterapi.NodeInfo{Name: "n2", HTTP: "https://chat.example.com", PeerHTTP: c.peer}
		if got := peerHTTPURL(m, info); got != c.want {
			t.Errorf("PeerHTTP %q: %q, want %q", c.peer, got, c.want)
		}
	}
}
