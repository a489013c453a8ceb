package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth"
)

// `edgechat cluster status` (GET /cluster/status, admin) answers on a node
// that waits for its cluster: that is when an operator needs it (a
// cluster that does not form: a wrong --join, a --bootstrap-expect of
// more nodes than were started, a peer that cannot be reached). Before,
// it was held with every other request: 503 "this node is starting
// (waiting for its cluster); retry", for as long as the node waited.
func TestClusterStatusAnswersWhileTheNodeWaitsForItsCluster(t *testing.T) {
	n, cfg := startWaitingNode(t)
	tok, err := auth.MintFromKeyDir(filepath.Join(cfg.DataDir, "keys"), auth.DefaultIssuer, auth.Account{UserID: "operator", Admin: true}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		req, _ := http.NewRequest(http.MethodGet, n.HTTPURL()+"/cluster/status", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var st struct {
			Node, State, Leader string
		}
		derr := json.NewDecoder(resp.Body).Decode(&st)
		if resp.StatusCode != http.StatusOK || derr != nil || st.Node != "n1" || st.Leader != "" {
			return fmt.Errorf("GET /cluster/status of a node waiting for its cluster: %d %+v %v", resp.StatusCode, st, derr)
		}
		return nil
	})
	if n.Ready() {
		t.Fatal("the node says it is ready without a cluster")
	}
}
