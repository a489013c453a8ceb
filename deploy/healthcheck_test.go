package deploy

import (
	"slices"
	"strings"
	"testing"
)

// The image's and compose's health checks run `edgechat health` in the
// node's own environment: without --url it asks the node that
// environment configures (its port, TLS). A pinned
// http://127.0.0.1:8080 made a container configured with another
// EDGECHAT_HTTP_ADDR, or with TLS, unhealthy for ever
// (cmd/edgechat TestHealthFollowsTheNodesEnvironment).
func TestHealthChecksDoNotPinTheURL(t *testing.T) {
	stages := readDockerfile(t, deployFile("Dockerfile"))
	var hc string
	for _, in := range stages[len(stages)-1].instrs {
		if in.cmd == "HEALTHCHECK" {
			hc = in.args
		}
	}
	if !strings.Contains(hc, `"/edgechat", "health"`) || strings.Contains(hc, "--url") {
		t.Errorf("Dockerfile HEALTHCHECK %s: want edgechat health without --url", hc)
	}
	docs := readYAML(t, deployFile("compose.yaml"))
	test := getList(docs[0], "x-edgechat", "healthcheck", "test")
	var args []string
	for _, a := range test {
		args = append(args, a.(string))
	}
	if !slices.Contains(args, "health") || slices.Contains(args, "--url") {
		t.Errorf("compose health check %v: want edgechat health without --url", args)
	}
}
