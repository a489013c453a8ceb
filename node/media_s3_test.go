package node_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// withMinIO points a node's media store at a real MinIO server, with
// buckets of its own.
func withMinIO(m storetest.MinIO, prefix string) nodetest.Option {
	sc := m.Config(prefix)
	return nodetest.WithConfig(func(c *node.Config) {
		c.MediaStore = node.MediaStoreS3
		c.S3Endpoint, c.S3AccessKey, c.S3SecretKey = sc.Endpoint, sc.AccessKey, sc.SecretKey
		c.S3RawBucket, c.S3ProcessedBucket, c.S3ColdBucket = sc.RawBucket, sc.ProcessedBucket, sc.ColdBucket
	})
}

// The whole pipeline against a real MinIO: downloads are redirects to
// presigned URLs.
func TestMediaPipelineS3(t *testing.T) {
	m := storetest.StartMinIO(t)
	n := nodetest.StartNode(t, withMinIO(m, "pipe"))
	testMediaPipeline(t, n)
}

// A direct upload: the client PUTs to a presigned URL and never calls
// /complete; MinIO's notification starts the processing.
func TestMediaDirectUploadS3(t *testing.T) {
	m := storetest.StartMinIO(t)
	n := nodetest.StartNode(t, withMinIO(m, "direct"))
	alice := newMediaUser(t, n, "alice")
	photo := pngBytes(t, halves(300, 200))
	var ans struct {
		MediaID, Method, URL string
	}
	if st := api(t, n, alice.token, "POST", "/media/uploads",
		map[string]any{"name": "direct.png", "size": len(photo), "contentType": "image/png"}, &ans); st != 201 || ans.Method != "PUT" {
		t.Fatalf("direct upload: %d %+v", st, ans)
	}
	req, _ := http.NewRequest("PUT", ans.URL, bytes.NewReader(photo))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT to the presigned URL: %v %v", resp, err)
	}
	resp.Body.Close()
	ev := alice.outcome(t, ans.MediaID)
	if ev.Type != "mediaReady" || ev.Media["width"] != float64(300) {
		t.Fatalf("direct upload processed: %+v", ev)
	}
	// /complete after the notification is harmless.
	var st struct{ Status string }
	if code := api(t, n, alice.token, "POST", "/media/"+ans.MediaID+"/complete", nil, &st); code != 202 || st.Status != "ready" {
		t.Fatalf("complete after processing: %d %+v", code, st)
	}
	_ = json.Marshal
}
