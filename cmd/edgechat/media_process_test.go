package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// TestMediaJobSurvivesSIGKILLOfItsWorker is the real-process version of
// node's TestMediaJobSurvivesItsWorkerStopping: three `edgechat serve`
// processes share a real MinIO, alice uploads a JPEG big enough that
// processing takes most of a second, and the node that claimed the job
// is killed with SIGKILL in the middle of it — no graceful stop, no
// release of the claim, the renewals just stop. Once the lease (3s here)
// ends another node must take the job over and finish it, once: the
// media is ready, exactly one surviving node processed it, the killed
// node never committed an end, and each of alice's devices on the
// surviving nodes gets exactly one mediaReady event.
func TestMediaJobSurvivesSIGKILLOfItsWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes and MinIO")
	}
	const lease = 3 * time.Second
	m := storetest.StartMinIO(t)
	sc := m.Config("sigkill")
	c := startCluster3(t, "--media-store", "s3", "--s3-endpoint", sc.Endpoint,
		"--s3-access-key", sc.AccessKey, "--s3-secret-key", sc.SecretKey,
		"--s3-raw-bucket", sc.RawBucket, "--s3-processed-bucket", sc.ProcessedBucket, "--s3-cold-bucket", sc.ColdBucket,
		"--media-job-lease", lease.String())
	tok := c.addUsers("a long password", "alice")["alice"]

	// One device on each node: whichever node is killed, two keep
	// listening, and the event must cross from the worker's node to them.
	devices := make([]*mqtttest.Client, 3)
	for i := range devices {
		devices[i] = mqtttest.MustDial(t, c.proc(i).mqtt, v5Options(fmt.Sprintf("alice/d%d", i), "alice", tok))
		devices[i].MustSub(t, "user/alice/events")
	}

	body := noisyJPEG(t, 4000, 3000)
	uploadedAt := time.Now()
	id := uploadMedia(t, c.proc(0).http, tok, "big.jpg", "image/jpeg", body)

	// The claiming worker logs "media job claimed" (naming the media)
	// before it fetches the raw upload.
	worker := -1
	checkFor(t, 20*time.Second, 2*time.Millisecond, func() error {
		for i := range 3 {
			if len(jobLines(c.proc(i), id, "media job claimed")) > 0 {
				worker = i
				return nil
			}
		}
		return fmt.Errorf("media %s not claimed yet", id)
	})
	killed := c.proc(worker)
	claimedAt := time.Now()
	if l := jobLines(killed, id, "media job claimed"); l[0]["attempt"] != float64(1) {
		t.Fatalf("n%d's claim is not the first: %v", worker+1, l)
	}
	// Kill it mid-processing: once the steps before the image step are
	// done (the worker's step metrics count them as they end), the long
	// one (decoding, scaling and encoding 12 megapixels) is running, with
	// the raw upload fetched and temporary files in place.
	checkFor(t, 15*time.Second, 2*time.Millisecond, func() error {
		if l := jobLines(killed, id, "media job finished"); len(l) > 0 {
			t.Fatalf("n%d finished the job before the image step was seen running (make the image bigger): %v", worker+1, l)
		}
		n, err := metricSum(killed.http, "edgechat_media_step_seconds_count", `step="metadata"`)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("n%d has not read the upload's metadata yet", worker+1)
		}
		return nil
	})
	killed.stop(t, syscall.SIGKILL)
	killedAt := time.Now()
	t.Logf("n%d claimed %s (%d bytes) %v after the upload began; killed it %v later, in the image step", worker+1, id, len(body),
		claimedAt.Sub(uploadedAt).Round(time.Millisecond), killedAt.Sub(claimedAt).Round(time.Millisecond))

	// The killed node must not have finished the job before the kill:
	// else this test would prove nothing (processing was too fast). Its
	// log is complete: the JSON handler writes each line to stderr at
	// once, and stop returned after the pipe's end.
	if l := jobLines(killed, id, "media job finished"); len(l) > 0 {
		t.Fatalf("n%d finished the job before it was killed (make the image bigger): %v", worker+1, l)
	}
	var alive []int
	for i := range 3 {
		if i != worker {
			alive = append(alive, i)
		}
	}

	// Ready as seen from a surviving node: a takeover waits out the lease,
	// and the Raft leader may have been the one killed.
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		var info struct{ Status, Reason string }
		if _, err := httpJSON("GET", c.proc(alive[0]).http+"/media/"+id+"/info", tok, nil, &info); err != nil {
			return err
		}
		if info.Status != "ready" {
			return fmt.Errorf("media %s is %q %s", id, info.Status, info.Reason)
		}
		return nil
	})
	t.Logf("ready %v after the kill (lease %v)", time.Since(killedAt).Round(time.Millisecond), lease)

	// One end, committed by a survivor under the second claim: the
	// killed worker's attempt 1 lapsed and nobody else held the job. The
	// survivor logs it once its proposal returns, which may be after the
	// node asked above applied it.
	var finished []map[string]any
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		finished = nil
		for i := range 3 {
			for _, l := range jobLines(c.proc(i), id, "media job finished") {
				if l["node"] != fmt.Sprintf("n%d", i+1) {
					t.Fatalf("n%d logged a job end as node %v", i+1, l["node"])
				}
				finished = append(finished, l)
			}
		}
		if len(finished) == 0 {
			return errors.New("no node logged the job's end yet")
		}
		return nil
	})
	if len(finished) != 1 || finished[0]["node"] == fmt.Sprintf("n%d", worker+1) ||
		finished[0]["status"] != "ready" || finished[0]["attempt"] != float64(2) {
		t.Fatalf("job ends logged: %v; want one, ready, attempt 2, not by the killed n%d", finished, worker+1)
	}
	finisher := finished[0]["node"].(string)

	// Processed once, by a survivor: a worker counts a result before it
	// commits it, so the finisher's counter is up by now. The killed
	// node's counter died with it; its log (checked above) is what it
	// left.
	readyTotal := 0.0
	for _, i := range alive {
		n, err := metricSum(c.proc(i).http, "edgechat_media_processed_total", `status="ready"`)
		if err != nil {
			t.Fatal(err)
		}
		readyTotal += n
	}
	if readyTotal != 1 {
		t.Errorf("the surviving nodes processed the upload to ready %v times, want 1", readyTotal)
	}
	if took, err := metricSum(c.proc(int(finisher[1]-'1')).http, "edgechat_media_job_seconds_sum", ""); err == nil {
		t.Logf("%s took the job over (attempt 2) and processed it in %.2fs", finisher, took)
	}

	for _, i := range alive {
		checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if n := mediaReadyEvents(devices[i], id); n != 1 {
				return fmt.Errorf("alice's device on n%d got %d mediaReady events for %s", i+1, n, id)
			}
			return nil
		})
	}
	// A second end (a duplicate notification, or a worker finishing the
	// job again) would show within a moment; nothing signals that none
	// is coming, so a short bounded wait is the only absence check.
	time.Sleep(2 * time.Second)
	for _, i := range alive {
		if n := mediaReadyEvents(devices[i], id); n != 1 {
			t.Errorf("alice's device on n%d: %d mediaReady events for %s two seconds later", i+1, n, id)
		}
	}
	if n := len(jobLines(c.proc(alive[0]), id, "media job finished")) + len(jobLines(c.proc(alive[1]), id, "media job finished")); n != 1 {
		t.Errorf("%d job ends logged two seconds later", n)
	}
	// The survivors' workers are idle again (the gauge drops once the
	// job's end is committed, the raw upload deleted and alice told).
	for _, i := range alive {
		if running, err := metricSum(c.proc(i).http, "edgechat_media_jobs_running", ""); err != nil || running != 0 {
			t.Errorf("n%d: edgechat_media_jobs_running %v (%v) two seconds after the job ended", i+1, running, err)
		}
	}
}

// noisyJPEG is a w×h JPEG of noise: big to decode and scale, so that
// processing takes long enough to kill a node in the middle of it (a
// copy of node's test helper).
func noisyJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	x := uint32(2463534242)
	for i := range img.Pix {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		img.Pix[i] = byte(x)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// uploadMedia POSTs body as a raw upload and returns the media ID.
func uploadMedia(t *testing.T, httpURL, token, name, ctype string, body []byte) string {
	t.Helper()
	req, err := http.NewRequest("POST", httpURL+"/media?name="+name, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", ctype)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ MediaID, Status string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 202 || out.MediaID == "" {
		t.Fatalf("upload %s: %d %+v %v", name, resp.StatusCode, out, err)
	}
	return out.MediaID
}

// jobLines returns the JSON log lines of p with message msg about media
// id.
func jobLines(p *proc, id, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if !strings.Contains(line, id) || !strings.Contains(line, msg) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg && m["media"] == id {
			out = append(out, m)
		}
	}
	return out
}

// mediaReadyEvents counts the mediaReady events for id that d received.
func mediaReadyEvents(d *mqtttest.Client, id string) int {
	n := 0
	for _, m := range d.Received("user/alice/events") {
		var e struct{ Type, MediaID string }
		if json.Unmarshal(m.Payload, &e) == nil && e.MediaID == id && e.Type == "mediaReady" {
			n++
		}
	}
	return n
}

// metricSum scrapes a node's /metrics and sums the samples of the metric
// name whose labels contain match ("" for all of them).
func metricSum(httpURL, name, match string) (float64, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(httpURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("GET %s/metrics: %d %s", httpURL, resp.StatusCode, b)
	}
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue // a comment, or another metric sharing the prefix
		}
		labels, value := "", rest
		if strings.HasPrefix(rest, "{") {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return 0, fmt.Errorf("bad metrics line %q", line)
			}
			labels, value = rest[:end+1], rest[end+1:]
		}
		if !strings.Contains(labels, match) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("bad metrics line %q: %v", line, err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found && match == "" {
		return 0, fmt.Errorf("%s has no %s", httpURL, name)
	}
	return sum, nil
}
