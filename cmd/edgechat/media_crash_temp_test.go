package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAKilledNodeLeavesNoMediaTempFilesBehind: a node killed (SIGKILL:
// the OOM killer, a power cut) while an upload streams in and while a
// job is processing leaves a part-written upload in its raw tier
// ({data}/media/raw/.tmp-*) and the job's copy of the upload and its
// outputs in {data}/tmp. Nothing names them after the restart: neither
// the sweeper (it deletes what records name) nor the job (processed
// again, with new files), so every crash kept up to the largest upload
// and more on the disk for good. The restarted node removes them.
func TestAKilledNodeLeavesNoMediaTempFilesBehind(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	bin := edgechatBinary(t)
	dir := t.TempDir()
	args := []string{"--data", dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--media-job-lease", "2s"}
	p := startServe(t, bin, args...)
	runCLI(t, bin, "a long password\n", "user", "add", "alice", "--password-stdin", "--server", p.http)
	tok := mintToken(t, bin, dir, "alice", p)

	// An upload that stops half-way: its first megabyte is on the disk.
	u, err := url.Parse(p.http)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /media?name=half.bin HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", u.Host, tok, 8<<20)
	if _, err := c.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	rawDir := filepath.Join(dir, "media", "raw")
	var halfWritten []string
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		halfWritten = tempFiles(t, rawDir, ".tmp-", 1<<20)
		if len(halfWritten) == 0 {
			return fmt.Errorf("no part-written upload in %s yet", rawDir)
		}
		return nil
	})

	// A job in its image step: the upload's copy and outputs in {data}/tmp.
	id := uploadMedia(t, p.http, tok, "big.jpg", "image/jpeg", noisyJPEG(t, 4000, 3000))
	tmpDir := filepath.Join(dir, "tmp")
	checkFor(t, 15*time.Second, 2*time.Millisecond, func() error {
		if l := jobLines(p, id, "media job finished"); len(l) > 0 {
			t.Fatalf("the job finished before the image step was seen running (make the image bigger): %v", l)
		}
		n, err := metricSum(p.http, "edgechat_media_step_seconds_count", `step="metadata"`)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("the upload's metadata is not read yet")
		}
		return nil
	})
	p.stop(t, syscall.SIGKILL)
	jobFiles := tempFiles(t, tmpDir, "", 0)
	if len(jobFiles) == 0 {
		t.Fatalf("no temporary file of the job in %s when the node was killed", tmpDir)
	}
	t.Logf("left by the kill: %v in raw, %v in tmp", halfWritten, jobFiles)

	p = startServe(t, bin, args...)
	// The job is processed again (its lease ended with the node).
	checkFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		var info struct{ Status string }
		if _, err := httpJSON("GET", p.http+"/media/"+id+"/info", tok, nil, &info); err != nil {
			return err
		}
		if info.Status != "ready" {
			return fmt.Errorf("media %s is %q", id, info.Status)
		}
		return nil
	})
	var left []string
	for _, f := range append(halfWritten, jobFiles...) {
		if _, err := os.Stat(f); err == nil {
			left = append(left, f)
		}
	}
	if len(left) > 0 {
		t.Fatalf("after the restart the files the killed node was writing are still there: %v", left)
	}
}

// tempFiles lists the files in dir whose names begin with prefix and
// that hold at least min bytes.
func tempFiles(t *testing.T, dir, prefix string, min int64) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) || e.IsDir() {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Size() >= min {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}
