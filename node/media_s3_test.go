package node_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/notification"

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
// /complete; the raw bucket's event notification (MinIO's webhook
// target, authenticated with the shared secret) starts the processing.
// MinIO needs the webhook's address when it starts, before the node
// exists: it posts to a forwarder that passes events on once the node is
// up.
func TestMediaDirectUploadS3(t *testing.T) {
	var target atomic.Pointer[url.URL]
	fwd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := target.Load()
		if u == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		httputil.NewSingleHostReverseProxy(u).ServeHTTP(w, r)
	}))
	t.Cleanup(fwd.Close)
	const secret = "a-shared-secret-for-s3-events"
	m := storetest.StartMinIO(t,
		"MINIO_NOTIFY_WEBHOOK_ENABLE_EDGECHAT=on",
		"MINIO_NOTIFY_WEBHOOK_ENDPOINT_EDGECHAT="+fwd.URL+"/media/events",
		"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_EDGECHAT="+secret)
	secretFile := filepath.Join(t.TempDir(), "events-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := m.Config("direct")
	n := nodetest.StartNode(t, withMinIO(m, "direct"), nodetest.WithConfig(func(c *node.Config) {
		c.S3RawBucket, c.S3ProcessedBucket, c.S3ColdBucket = sc.RawBucket, sc.ProcessedBucket, sc.ColdBucket
		c.MediaEventsSecretFile = secretFile
	}))
	u, _ := url.Parse(n.HTTPURL)
	target.Store(u)
	// What an operator does with `mc event add ... --event put`.
	mc, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	cfg := notification.Configuration{}
	qc := notification.NewConfig(notification.NewArn("minio", "sqs", "", "EDGECHAT", "webhook"))
	qc.AddEvents(notification.ObjectCreatedAll)
	cfg.AddQueue(qc)
	if err := mc.SetBucketNotification(t.Context(), sc.RawBucket, cfg); err != nil {
		t.Fatalf("bucket notification: %v", err)
	}

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
}

// A direct upload larger than declared is refused at /complete and its
// object deleted (the quota counted the declared size); the upload waits
// for the declared bytes again, and the sweeps delete it when abandoned.
func TestMediaDirectUploadLargerThanDeclared(t *testing.T) {
	m := storetest.StartMinIO(t)
	n := nodetest.StartNode(t, withMinIO(m, "liar"))
	tok := n.NewUser(t, "alice")
	var ans struct{ MediaID, URL string }
	if st := api(t, n, tok, "POST", "/media/uploads", map[string]any{"name": "a.bin", "size": 10}, &ans); st != 201 {
		t.Fatalf("direct upload: %d", st)
	}
	req, _ := http.NewRequest("PUT", ans.URL, bytes.NewReader(make([]byte, 5000)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code := api(t, n, tok, "POST", "/media/"+ans.MediaID+"/complete", nil, nil); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("complete of a larger object: %d", code)
	}
	var info struct{ Status string }
	if code := api(t, n, tok, "GET", "/media/"+ans.MediaID+"/info", nil, &info); code != 200 || info.Status != "uploading" {
		t.Fatalf("the refused upload's record: %d %+v", code, info)
	}
}

// A direct upload asked for again after a lost answer (the client never
// got its URL) must not become a second upload counted against the
// quota: with the same Idempotency-Key the retry names the same upload
// (200, not 201) with fresh URLs while its bytes are awaited, and its
// status once they came; the key with another file is refused.
func TestMediaDirectUploadRetryWithIdempotencyKeyS3(t *testing.T) {
	m := storetest.StartMinIO(t)
	n := nodetest.StartNode(t, withMinIO(m, "idem"))
	tok := n.NewUser(t, "alice")
	photo := pngBytes(t, halves(30, 20))
	body := map[string]any{"name": "a.png", "size": len(photo), "contentType": "image/png"}
	type answer struct {
		MediaID string `json:"mediaId"`
		URL     string `json:"url"`
		Status  string `json:"status"`
	}
	ask := func(key string, body any) (int, answer, []byte) {
		code, b := apiKeyed(t, n, tok, http.MethodPost, "/media/uploads", key, body)
		var a answer
		_ = jsonUnmarshal(b, &a)
		return code, a, b
	}
	code, first, b := ask("d-1", body)
	if code != http.StatusCreated || first.URL == "" {
		t.Fatalf("direct upload: %d %s", code, b)
	}
	code, again, b := ask("d-1", body)
	if code != http.StatusOK || again.MediaID != first.MediaID || again.URL == "" {
		t.Fatalf("asked again with the same key: %d %s, want 200 naming %s with a URL", code, b, first.MediaID)
	}
	req, _ := http.NewRequest("PUT", again.URL, bytes.NewReader(photo))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT to the retry's URL: %v %v", resp, err)
	}
	resp.Body.Close()
	if code := api(t, n, tok, "POST", "/media/"+first.MediaID+"/complete", nil, nil); code != http.StatusAccepted {
		t.Fatalf("complete: %d", code)
	}
	if code, a, b := ask("d-1", body); code != http.StatusOK || a.MediaID != first.MediaID || a.URL != "" || a.Status == "" || a.Status == "uploading" {
		t.Errorf("asked again after completing: %d %s, want 200 with its status and no URL", code, b)
	}
	other := map[string]any{"name": "b.png", "size": len(photo), "contentType": "image/png"}
	if code, _, b := ask("d-1", other); code != http.StatusUnprocessableEntity {
		t.Errorf("the key with another file: %d %s, want 422", code, b)
	}
}
