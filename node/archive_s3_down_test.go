package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// While the object store holding the sealed segments cannot be reached,
// pages over sealed messages answer 503 unavailable with Retry-After (a
// client tries again, as the web page and the SDK do for a 503), not
// 500 internal, which says the server is broken and is not retried;
// pages of hot messages are answered as usual.
func TestSealedHistoryWhileTheObjectStoreIsDownIs503(t *testing.T) {
	m := storetest.StartMinIO(t)
	n := nodetest.StartNode(t, withMinIO(m, "down"), nodetest.WithConfig(func(c *node.Config) { c.S3ArchiveBucket = "down-archive" }))
	f := writeTieringHistory(t, n)
	if _, st, err := n.SweepArchive(context.Background(), time.Now().Add(31*24*time.Hour)); err != nil || st.Segments == 0 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	get := func(user, path string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", n.HTTPURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+f.tokens[user])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return resp.StatusCode, e.Error.Code, resp.Header.Get("Retry-After")
	}
	// A segment cut short in the bucket is damaged, not unavailable: 500,
	// never served, and not worth retrying.
	mc, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var cut string
	for o := range mc.ListObjects(ctx, "down-archive", minio.ListObjectsOptions{Prefix: "d/alice/carol/", Recursive: true}) {
		cut = o.Key
		data, err := mc.GetObject(ctx, "down-archive", o.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(data)
		if _, err := mc.PutObject(ctx, "down-archive", o.Key, bytes.NewReader(b[:len(b)/2]), int64(len(b)/2), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if cut == "" {
		t.Fatal("no segment of alice and carol")
	}
	if code, ec, ra := get("carol", "/chat/history?with=alice&limit=50"); code != 500 || ec != "internal" || ra != "" {
		t.Errorf("a page over a cut segment (%s): %d %q Retry-After %q, want 500 internal", cut, code, ec, ra)
	}
	m.Stop()
	if code, _, _ := get("bob", "/chat/history?with=alice&limit=1"); code != 200 {
		t.Errorf("the newest message (hot) with the object store down: %d", code)
	}
	for _, path := range []string{"/chat/history?with=alice&limit=50", "/chat/sync?limit=50"} {
		if code, ec, ra := get("bob", path); code != 503 || ec != "unavailable" || ra == "" {
			t.Errorf("GET %s over sealed messages with the object store down: %d %q Retry-After %q, want 503 unavailable with Retry-After", path, code, ec, ra)
		}
	}
	// A sweep with the store down stops at the first upload rather than
	// wait on the S3 client for every conversation due.
	alice := mustConnectV5(t, n.MQTTURL, "alice", "laptop", f.tokens["alice"])
	for i, to := range []string{"user/bob", "user/carol", "group/" + f.gid} {
		if code, _ := alice.Pub(t, to+"/newMessage", 1, textMsg(fmt.Sprintf("late%d", i), "after the outage began")); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
	}
	if _, st, err := n.SweepArchive(ctx, time.Now().Add(62*24*time.Hour)); err == nil || st.Failed != 0 || st.Segments != 0 {
		t.Errorf("a sweep with the store down: %+v %v, want it ended at the first upload", st, err)
	}
}
