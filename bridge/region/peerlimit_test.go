package region_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media"
)

// Another region's read of a media (chunks through the region link) is
// served, with the local store, by whichever node the link reaches; when
// that node does not hold the file it reads it from the holder over the
// holder's HTTP API, as the media's uploader. The holder's gateway
// charged every such read to the uploader's own read bucket: a photo
// sent to another region spent it (a large one, or a few, failed to
// fetch: 429), and its uploader's own reads on that node were refused.
// The read is the node's own request now, not limited there.
func TestMediaReadForAnotherRegionIsNotChargedToTheUploader(t *testing.T) {
	loaded, err := node.LoadConfig([]string{"--http-rate", "read=0.001/12"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	limits := nodetest.WithConfig(func(c *node.Config) {
		c.NoRateLimits = false
		c.HTTPRate = loaded.HTTPRate
	})
	eu, us := startLinked(t, 3, "eu", "us", nil, nil, limits)
	holder := eu.nodes[1] // the link reaches eu.nodes[0]
	aliceTok := eu.newUser(t, "alice")
	bobTok := us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")

	req, _ := http.NewRequest("POST", holder.HTTPURL+"/media?name=beach.jpg", bytes.NewReader(noisyJPEG(t, 900, 700, 1)))
	req.Header.Set("Authorization", "Bearer "+aliceTok)
	req.Header.Set("Content-Type", "image/jpeg")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var up struct{ MediaID string }
	if err := json.NewDecoder(resp.Body).Decode(&up); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	var rec media.Record
	nodetest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if rec, err = holder.Media.Get(up.MediaID); err != nil || rec.Status != media.StatusReady {
			return fmt.Errorf("media %s: %+v %v", up.MediaID, rec.Status, err)
		}
		return nil
	})
	if rec.Node != holder.Config.NodeID {
		t.Fatalf("the file is on %s, want %s (the node that took the upload)", rec.Node, holder.Config.NodeID)
	}
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, mediaMsg("p1", up.MediaID)); code != 0 {
		t.Fatalf("media to bob@us: %#x", code)
	}
	if got := nextMedia(t, bob, "user/bob/newMessage"); got.Media.ID != up.MediaID+"@eu" {
		t.Fatalf("bob got %+v", got)
	}
	nodetest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := counter(t, us.nodes[0], "edgechat_media_remote_fetches_total", ""); n == 0 {
			return fmt.Errorf("no fetch yet")
		}
		return nil
	})
	if ok := counter(t, us.nodes[0], "edgechat_media_remote_fetches_total", `result="ok"`); ok != 1 {
		t.Errorf("us's fetch of alice's photo: %v ok (of %v)", ok, counter(t, us.nodes[0], "edgechat_media_remote_fetches_total", ""))
	}
	// alice's own reads on the node that holds her photo: her bucket (12)
	// is hers.
	var codes []int
	for range 12 {
		codes = append(codes, call(t, holder, aliceTok, "GET", "/media/"+up.MediaID+"/info", nil, nil))
	}
	if fmt.Sprint(codes) != fmt.Sprint([]int{200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200}) {
		t.Errorf("alice's 12 reads on %s after us fetched her photo: %v, want all 200", holder.Config.NodeID, codes)
	}
	if n := counter(t, holder, "edgechat_http_rate_limited_total", ""); n != 0 {
		t.Errorf("%s refused %v requests 429", holder.Config.NodeID, n)
	}
}
