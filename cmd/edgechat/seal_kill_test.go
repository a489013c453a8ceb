package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// TestSealSurvivesSIGKILLAtEachStep kills a node with SIGKILL at each
// step of sealing (the segment built but not uploaded, uploaded but not
// committed, committed), with the local store and with a real MinIO.
// After the restart the sealer finishes the job: every acknowledged
// message is in history and sync exactly once, in order, history reads
// the same bytes as before, everything but the newest message ends up
// sealed, and no unreferenced object is left behind.
func TestSealSurvivesSIGKILLAtEachStep(t *testing.T) {
	if testing.Short() {
		t.Skip("kills real processes")
	}
	bin := edgechatBinary(t)
	var m storetest.MinIO
	haveMinIO := false
	for _, c := range []struct{ store, step string }{
		{"local", "after-upload"}, {"local", "after-commit"},
		{"s3", "before-upload"}, {"s3", "after-upload"}, {"s3", "after-commit"},
	} {
		outer := t
		t.Run(c.store+"/"+c.step, func(t *testing.T) {
			var s3args []string
			var mc *minio.Client
			bucket := "seal-" + strings.ReplaceAll(c.step, "-", "")
			if c.store == "s3" {
				if _, err := storetest.FindMinIO(); err != nil && os.Getenv("CI") != "true" {
					// Skipped here: StartMinIO(outer) would skip the
					// parent from inside a subtest, which fails it.
					t.Skipf("skipping the S3 steps: %v", err)
				}
				if !haveMinIO {
					m, haveMinIO = storetest.StartMinIO(outer), true // one server for the subtests
				}
				sc := m.Config(bucket)
				s3args = []string{"--media-store", "s3", "--s3-endpoint", sc.Endpoint, "--s3-access-key", sc.AccessKey, "--s3-secret-key", sc.SecretKey,
					"--s3-raw-bucket", sc.RawBucket, "--s3-processed-bucket", sc.ProcessedBucket, "--s3-cold-bucket", sc.ColdBucket,
					"--s3-archive-bucket", bucket + "-archive"}
				var err error
				if mc, err = minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")}); err != nil {
					t.Fatal(err)
				}
			}
			testSealKill(t, bin, c.step, s3args, func() int {
				if mc == nil {
					return -1
				}
				n := 0
				for o := range mc.ListObjects(context.Background(), bucket+"-archive", minio.ListObjectsOptions{Recursive: true}) {
					if o.Err == nil && !strings.HasPrefix(o.Key, "o/") { // segments, not the owner's marks
						n++
					}
				}
				return n
			})
		})
	}
}

func testSealKill(t *testing.T, bin, step string, s3args []string, objects func() int) {
	data := t.TempDir()
	common := append([]string{"--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off",
		"--archive-hot-age", "1ms", "--archive-seal-every", "100ms", "--archive-orphan-grace", "1s"}, s3args...)
	p := startServe(t, bin, append(common, "--cluster-addr", "127.0.0.1:0", "--archive-seal-pause-at", step)...)
	for _, u := range []string{"alice", "bob"} {
		runCLI(t, bin, "correct horse battery\n", "user", "add", u, "--password-stdin", "--server", p.http)
	}
	runCLI(t, bin, "", "user", "grant", "bob", "admin", "--data", data, "--server", p.http)
	alice := dialV5(t, p.mqtt, "alice/phone", "alice", mintToken(t, bin, data, "alice", p))
	const total = 150
	for i := range total {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		pr, err := alice.Publish(ctx, &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
			Payload: fmt.Appendf(nil, `{"cid":"c%d","type":"text","body":"%d"}`, i, i)})
		cancel()
		if err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d: %v %+v", i, err, pr)
		}
	}
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(p.logs.String(), "sealer paused") {
			return fmt.Errorf("the sealer has not reached %s", step)
		}
		return nil
	})
	bobTok := mintToken(t, bin, data, "bob", p)
	before := historyBytes(t, p.http, bobTok)
	p.stop(t, syscall.SIGKILL)

	p2 := startServe(t, bin, append(common, "--cluster-addr", p.cluster)...)
	bobTok = mintToken(t, bin, data, "bob", p2)
	var status struct {
		SealedMessages int `json:"sealedMessages"`
		SealedSegments int `json:"sealedSegments"`
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if _, err := httpJSON("GET", p2.http+"/admin/archive", bobTok, nil, &status); err != nil {
			return err
		}
		if status.SealedMessages != total-1 {
			return fmt.Errorf("%d messages sealed", status.SealedMessages)
		}
		if n := objects(); n >= 0 && n != status.SealedSegments {
			return fmt.Errorf("%d objects in the archive bucket for %d segments", n, status.SealedSegments)
		}
		if objects() < 0 {
			if n := countSegFiles(t, filepath.Join(data, "archive")); n != status.SealedSegments {
				return fmt.Errorf("%d segment files for %d segments", n, status.SealedSegments)
			}
		}
		return nil
	})
	if out := runCLI(t, bin, "", "archive", "status", "--data", data, "--server", p2.http); !strings.Contains(out, fmt.Sprintf("%d messages", total-1)) {
		t.Errorf("edgechat archive status said %q", out)
	}
	after := historyBytes(t, p2.http, bobTok)
	if before != after {
		at := 0
		for at < len(before) && at < len(after) && before[at] == after[at] {
			at++
		}
		from := max(at-200, 0)
		t.Errorf("history differs after the kill and sealing, from byte %d of %d/%d:\nbefore …%.400s\nafter  …%.400s",
			at, len(before), len(after), before[from:], after[from:])
	}
	seen, order := syncAll(t, p2.http, bobTok)
	for i := range total {
		if n := seen[fmt.Sprintf("c%d", i)]; n != 1 {
			t.Errorf("acknowledged message c%d synced %d times", i, n)
		}
	}
	for i, k := range order["alice"] {
		if k != i {
			t.Fatalf("sync order: position %d holds message %d", i, k)
		}
	}
	p2.stop(t, syscall.SIGTERM)
}

// historyBytes is bob's whole history with alice, page by page, as the
// server wrote it.
func historyBytes(t *testing.T, httpURL, token string) string {
	t.Helper()
	var all strings.Builder
	before := ""
	for {
		var page struct {
			Messages []struct {
				ID string `json:"id"`
			} `json:"messages"`
			HasMore bool `json:"hasMore"`
		}
		raw, err := httpRaw(httpURL+"/chat/history?with=alice&limit=40"+before, token, &page)
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString(raw)
		if !page.HasMore || len(page.Messages) == 0 {
			return all.String()
		}
		before = "&before=" + url.QueryEscape(page.Messages[len(page.Messages)-1].ID)
	}
}

func countSegFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".seg") {
			n++
		}
		return nil
	})
	return n
}

// httpRaw GETs url and returns the body as the server wrote it, decoded
// into out as well.
func httpRaw(url, token string, out any) (string, error) {
	var raw json.RawMessage
	if _, err := httpJSON("GET", url, token, nil, &raw); err != nil {
		return "", err
	}
	return string(raw), json.Unmarshal(raw, out)
}
