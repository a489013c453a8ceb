package main

import (
	"bytes"
	"strings"
	"testing"
)

// `edgechat cluster status` shows a member marked down (it has not
// answered the leader for --node-down-after; still a member). Before:
// the line of a dead member looked like any other's.
func TestClusterStatusShowsAMemberDown(t *testing.T) {
	body := []byte(`{"node":"n1","state":"Leader","leader":"n1","term":3,"members":[` +
		`{"name":"n1","clusterAddr":"127.0.0.1:7946","suffrage":"Voter","leader":true,"lag":0},` +
		`{"name":"n3","clusterAddr":"127.0.0.1:7948","suffrage":"Voter","lag":-1,"down":true}]}`)
	var out bytes.Buffer
	if err := printStatus(&out, body); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "n1":
			if strings.Contains(line, "down") {
				t.Errorf("n1 shown down: %q", line)
			}
		case "n3":
			if fields[len(fields)-1] != "down" {
				t.Errorf("n3, marked down, shown as %q", line)
			}
		}
	}
}

// It shows the cluster's feature level (GET /cluster/status featureLevel).
func TestClusterStatusShowsTheFeatureLevel(t *testing.T) {
	var out bytes.Buffer
	if err := printStatus(&out, []byte(`{"node":"n1","state":"Leader","leader":"n1","term":3,"featureLevel":1,"members":[]}`)); err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); !strings.HasSuffix(first, ", feature level 1") {
		t.Errorf("first line %q, want it to end with the feature level", first)
	}
}
