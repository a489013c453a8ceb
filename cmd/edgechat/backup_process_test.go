package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/services/backup"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// TestBackupUnderLoadRestoreNewCluster: three `edgechat serve`
// processes take durable messages from three senders; `edgechat backup`
// against a follower writes a backup while they keep sending; `edgechat
// restore` builds the first node of a new cluster from it, two fresh
// nodes join, and on every new node the recipient's sync holds every
// message acknowledged before the backup was asked for, exactly once,
// and nothing but a prefix (in commit order) of the old cluster's stream.
// A damaged copy of the backup is refused with nothing written. The new
// cluster takes new messages.
func TestBackupUnderLoadRestoreNewCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six real processes")
	}
	backupRestoreCluster(t, backupScenario{})
}

// TestBackupSealedUnderLoadRestoreLocal: the same with the old cluster
// sealing messages into segments as they come (local archive stores,
// --archive-hot-age 1ms): the backup copies the segments its state
// references, the restore puts them into the first node's
// {data}/archive, and the nodes that join copy them from it when they
// need them (services/archive), so every node serves the sealed history.
func TestBackupSealedUnderLoadRestoreLocal(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six real processes")
	}
	backupRestoreCluster(t, backupScenario{
		oldFlags: []string{"--archive-hot-age", "1ms", "--archive-seal-every", "100ms"},
		sealed:   true,
	})
}

// TestBackupSealedUnderLoadRestoreS3Archive: a sealing cluster with
// local archive stores restored into an S3 archive bucket (real MinIO;
// skipped without one, except with CI=true) that the new cluster's three
// nodes share.
func TestBackupSealedUnderLoadRestoreS3Archive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six real processes")
	}
	m := storetest.StartMinIO(t)
	sc := m.Config("restored")
	s3 := []string{"--s3-endpoint", sc.Endpoint, "--s3-access-key", sc.AccessKey, "--s3-secret-key", sc.SecretKey}
	backupRestoreCluster(t, backupScenario{
		oldFlags:     []string{"--archive-hot-age", "1ms", "--archive-seal-every", "100ms"},
		sealed:       true,
		restoreFlags: append([]string{"--archive-store", "s3", "--s3-archive-bucket", sc.RawBucket + "-archive"}, s3...),
		newFlags: append([]string{"--media-store", "s3", "--s3-raw-bucket", sc.RawBucket, "--s3-processed-bucket", sc.ProcessedBucket,
			"--s3-cold-bucket", sc.ColdBucket, "--s3-archive-bucket", sc.RawBucket + "-archive"}, s3...),
	})
}

type backupScenario struct {
	oldFlags     []string // every node of the old cluster
	sealed       bool     // wait until the old cluster sealed segments, and want them in the backup
	restoreFlags []string
	newFlags     []string // every node of the new cluster
}

func backupRestoreCluster(t *testing.T, sc backupScenario) {
	c := startCluster3(t, sc.oldFlags...)
	names := []string{"snd1", "snd2", "snd3"}
	tokens := c.addUsers("a long password", append(names, "sink")...)
	l := startLoad(tokens, names, "sink", c.mqttAddrs)
	l.waitProgress(t, 300, 60*time.Second)
	if sc.sealed {
		checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			var st struct{ SealedSegments int }
			if _, err := httpJSON("GET", c.proc(0).http+"/admin/archive", operatorTok(t, c.dirs[0]), nil, &st); err != nil {
				return err
			}
			if st.SealedSegments < 3 {
				return fmt.Errorf("%d segments sealed", st.SealedSegments)
			}
			return nil
		})
	}

	// What was acknowledged before the backup was asked for.
	before := map[string]bool{}
	for _, s := range l.senders {
		s.mu.Lock()
		for _, k := range s.acked {
			before[fmt.Sprintf("%s-%d", s.name, k)] = true
		}
		s.mu.Unlock()
	}
	lead, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	follower := (lead + 1) % 3
	store := t.TempDir()
	t0 := time.Now()
	out := runCLI(t, c.bin, "", "backup", "--to", store, "--server", c.proc(follower).http, "--data", c.dirs[0])
	took := time.Since(t0)
	t.Logf("%s (from n%d, a follower, under load; %d messages acknowledged before)", out, follower+1, len(before))
	l.waitProgress(t, 100, 30*time.Second) // the load went on
	l.finish()
	old, err := syncMessages(c.proc(0).http, tokens["sink"])
	if err != nil {
		t.Fatal(err)
	}

	id, err := backup.Latest(t.Context(), mustDirStore(t, store))
	if err != nil {
		t.Fatal(err)
	}
	m, err := backup.Verify(t.Context(), mustDirStore(t, store), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sc.sealed != (m.Segments() > 0) {
		t.Fatalf("backup holds %d segments (sealing on: %v)", m.Segments(), sc.sealed)
	}
	// A damaged copy is refused, nothing written.
	bad := filepath.Join(t.TempDir(), id)
	copyDir(t, filepath.Join(store, id), bad)
	damaged := backup.StateName
	if sc.sealed {
		damaged = m.Files[len(m.Files)-1].Name
	}
	flipByte(t, filepath.Join(bad, filepath.FromSlash(damaged)))
	badData := t.TempDir()
	if out, err := runCLIErr(c.bin, "", append([]string{"restore", "--from", bad, "--data", badData}, sc.restoreFlags...)...); err == nil ||
		!strings.Contains(err.Error(), "damaged backup") || !strings.Contains(err.Error(), damaged+" has SHA-256") {
		t.Fatalf("restore of a damaged backup: %v %s", err, out)
	}
	if ents, _ := os.ReadDir(badData); len(ents) != 0 {
		t.Fatalf("a refused restore wrote %v", ents)
	}

	// Restore (the newest backup of the store) into the new cluster's first node.
	newDirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	t1 := time.Now()
	out = runCLI(t, c.bin, "", append([]string{"restore", "--from", store, "--data", newDirs[0]}, sc.restoreFlags...)...)
	restoreTook := time.Since(t1)
	t.Logf("%s", out)
	for i := range 3 {
		c.proc(i).stop(t, syscall.SIGTERM) // the old cluster is gone
	}
	nc := &testCluster{t: t, bin: c.bin, dirs: newDirs, extra: sc.newFlags}
	nc.procs = make([]*proc, 3)
	nc.procs[0] = startServe(t, nc.bin, nc.args(0, "127.0.0.1:0", "")...)
	for i := 1; i < 3; i++ {
		nc.procs[i] = startServe(t, nc.bin, nc.args(i, "127.0.0.1:0", nc.procs[0].cluster)...)
	}
	nc.waitFormed(60 * time.Second)
	sinkTok := mintToken(t, nc.bin, newDirs[0], "sink", nc.procs[0])

	var restored []syncedMsg
	for i := range 3 {
		p := nc.proc(i)
		checkFor(t, 60*time.Second, 200*time.Millisecond, func() error {
			msgs, err := syncMessages(p.http, sinkTok)
			if err != nil {
				return fmt.Errorf("n%d: %w", i+1, err)
			}
			seen := map[string]int{}
			for _, m := range msgs {
				seen[m.CID]++
			}
			for cid := range before {
				if seen[cid] != 1 {
					return fmt.Errorf("n%d: acknowledged %s found %d times (%d messages)", i+1, cid, seen[cid], len(msgs))
				}
			}
			for cid, n := range seen {
				if n > 1 {
					t.Fatalf("n%d: %s restored %d times", i+1, cid, n)
				}
			}
			if len(msgs) > len(old) {
				t.Fatalf("n%d: %d messages restored, the old cluster had %d", i+1, len(msgs), len(old))
			}
			for j, m := range msgs {
				if m.ID != old[j].ID || m.CID != old[j].CID || m.Body != old[j].Body {
					t.Fatalf("n%d: message %d is %+v, the old cluster's is %+v: not a prefix", i+1, j, m, old[j])
				}
			}
			restored = msgs
			return nil
		})
	}
	t.Logf("restored cluster: %d messages (all %d acknowledged before the backup, once each, a commit-order prefix of the old %d; %d segments); backup %.2fs, restore %.2fs",
		len(restored), len(before), len(old), m.Segments(), took.Seconds(), restoreTook.Seconds())

	// The new cluster takes new messages after the restored ones (from a
	// new account: the old senders' cids are taken, and a retried cid is
	// deduplicated, as it should be).
	runCLI(t, nc.bin, "a long password\n", "user", "add", "snd4", "--password-stdin", "--server", nc.proc(1).http)
	sndTok := mintToken(t, nc.bin, newDirs[0], "snd4", nc.procs[0])
	l2 := startLoad(map[string]string{"snd4": sndTok}, []string{"snd4"}, "sink", nc.mqttAddrs)
	l2.waitProgress(t, 20, 30*time.Second)
	l2.finish()
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		msgs, err := syncMessages(nc.proc(2).http, sinkTok)
		if err != nil {
			return err
		}
		if len(msgs) < len(restored)+20 {
			return fmt.Errorf("%d messages, want %d more than the restored %d", len(msgs), 20, len(restored))
		}
		if last := msgs[len(msgs)-1]; last.ID <= restored[len(restored)-1].ID && len(last.ID) <= len(restored[len(restored)-1].ID) {
			t.Fatalf("new message %s does not sort after the restored ones", last.ID)
		}
		return nil
	})
}

// operatorTok is a short admin token signed with the keys of dataDir.
func operatorTok(t *testing.T, dataDir string) string {
	t.Helper()
	tok, err := mintOperator(dataDir, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func mustDirStore(t *testing.T, dir string) *backup.DirStore {
	t.Helper()
	st, err := backup.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o750)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o640)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestBackupRestoreS3CLI: `edgechat backup --to s3://…` with an admin's
// --token against a real MinIO (skipped without one, except with
// CI=true), then `edgechat restore --from s3://…` (the newest backup of
// the prefix) into a new node that serves the old history.
func TestBackupRestoreS3CLI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	mi := storetest.StartMinIO(t)
	bin := edgechatBinary(t)
	s3 := []string{"--s3-endpoint", mi.URL, "--s3-access-key", mi.AccessKey, "--s3-secret-key", mi.SecretKey}
	dir := t.TempDir()
	p := startServe(t, bin, "--data", dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off")
	for _, u := range []string{"root", "alice", "bob"} {
		runCLI(t, bin, "a long password\n", "user", "add", u, "--password-stdin", "--server", p.http)
	}
	rootTok := mintToken(t, bin, dir, "root", p)
	aliceTok := mintToken(t, bin, dir, "alice", p)
	c := dialV5(t, p.mqtt, "alice/d1", "alice", aliceTok)
	for k := range 50 {
		pr, err := c.Publish(t.Context(), &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
			Payload: []byte(fmt.Sprintf(`{"cid":"a-%d","type":"text","body":"%d"}`, k, k))})
		if err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d: %v %v", k, pr, err)
		}
	}
	// A non-admin token is refused.
	if _, err := runCLIErr(bin, "", append([]string{"backup", "--to", "s3://backups/edge", "--server", p.http, "--token", aliceTok}, s3...)...); err == nil ||
		!strings.Contains(err.Error(), "403") {
		t.Fatalf("backup with a user's token: %v", err)
	}
	out := runCLI(t, bin, "", append([]string{"backup", "--to", "s3://backups/edge", "--server", p.http, "--token", rootTok}, s3...)...)
	t.Log(out)
	if !strings.Contains(out, "in s3://backups/edge/") {
		t.Fatalf("backup said %q", out)
	}
	p.stop(t, syscall.SIGTERM)

	newDir := t.TempDir()
	t.Log(runCLI(t, bin, "", append([]string{"restore", "--from", "s3://backups/edge", "--data", newDir}, s3...)...))
	p2 := startServe(t, bin, "--data", newDir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off")
	bobTok := mintToken(t, bin, newDir, "bob", p2)
	got, _ := syncAll(t, p2.http, bobTok)
	for k := range 50 {
		if got[fmt.Sprintf("a-%d", k)] != 1 {
			t.Fatalf("a-%d restored %d times (%d messages)", k, got[fmt.Sprintf("a-%d", k)], len(got))
		}
	}
	if len(got) != 50 {
		t.Fatalf("%d messages restored, want 50", len(got))
	}
}

// TestRestoreUsesTheArchiveStoreServeWill: `serve` keeps sealed segments
// in the media store's kind unless --archive-store says otherwise, and
// `edgechat restore` reads the same EDGECHAT_* environment (a container,
// a systemd unit's Environment=) for its S3 client. In an environment
// that sets EDGECHAT_MEDIA_STORE=s3 and not EDGECHAT_ARCHIVE_STORE,
// restore put the backup's segments into {data}/archive while the
// restored node read them from the S3 archive bucket: the sealed history
// was gone from the new cluster (its sync failed or came back without
// it). Restore now takes the archive store serve will run with: the
// segments are in the bucket and the new node serves every message.
func TestRestoreUsesTheArchiveStoreServeWill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	mi := storetest.StartMinIO(t)
	bin := edgechatBinary(t)
	store := sealedBackup(t, bin)

	// The new cluster's environment: media (and so sealed segments) on S3.
	sc := mi.Config("envrestore")
	for k, v := range map[string]string{"EDGECHAT_MEDIA_STORE": "s3", "EDGECHAT_S3_ENDPOINT": sc.Endpoint,
		"EDGECHAT_S3_ACCESS_KEY": sc.AccessKey, "EDGECHAT_S3_SECRET_KEY": sc.SecretKey,
		"EDGECHAT_S3_RAW_BUCKET": sc.RawBucket, "EDGECHAT_S3_PROCESSED_BUCKET": sc.ProcessedBucket,
		"EDGECHAT_S3_COLD_BUCKET": sc.ColdBucket, "EDGECHAT_S3_ARCHIVE_BUCKET": sc.RawBucket + "-archive"} {
		t.Setenv(k, v)
	}
	newDir := t.TempDir()
	t.Log(runCLI(t, bin, "", "restore", "--from", store, "--data", newDir))
	p2 := startServe(t, bin, "--data", newDir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off")
	restoredServesEveryMessage(t, bin, newDir, p2)
}

// restoredServesEveryMessage checks that p2, started on the restored
// data directory newDir, syncs each of sealedBackup's 30 messages to bob
// once.
func restoredServesEveryMessage(t *testing.T, bin, newDir string, p2 *proc) {
	t.Helper()
	bobTok := mintToken(t, bin, newDir, "bob", p2)
	msgs, err := syncMessages(p2.http, bobTok)
	if err != nil {
		t.Fatalf("sync on the restored node: %v", err)
	}
	got := map[string]int{}
	for _, m := range msgs {
		got[m.CID]++
	}
	for k := range 30 {
		if got[fmt.Sprintf("a-%d", k)] != 1 {
			t.Fatalf("a-%d restored %d times (%d messages)", k, got[fmt.Sprintf("a-%d", k)], len(msgs))
		}
	}
}

// sealedBackup runs a node that seals alice's 30 messages to bob
// ("a-0" … "a-29") into segments of its local archive, backs it up into
// a directory store it returns, and stops the node.
func sealedBackup(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	p := startServe(t, bin, "--data", dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off",
		"--archive-hot-age", "1ms", "--archive-seal-every", "100ms")
	for _, u := range []string{"root", "alice", "bob"} {
		runCLI(t, bin, "a long password\n", "user", "add", u, "--password-stdin", "--server", p.http)
	}
	aliceTok := mintToken(t, bin, dir, "alice", p)
	c := dialV5(t, p.mqtt, "alice/d1", "alice", aliceTok)
	for k := range 30 {
		pr, err := c.Publish(t.Context(), &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
			Payload: []byte(fmt.Sprintf(`{"cid":"a-%d","type":"text","body":"%d"}`, k, k))})
		if err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d: %v %v", k, pr, err)
		}
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		var st struct{ SealedSegments int }
		if _, err := httpJSON("GET", p.http+"/admin/archive", operatorTok(t, dir), nil, &st); err != nil {
			return err
		}
		if st.SealedSegments < 1 {
			return fmt.Errorf("%d segments sealed", st.SealedSegments)
		}
		return nil
	})
	store := t.TempDir()
	t.Log(runCLI(t, bin, "", "backup", "--to", store, "--server", p.http, "--data", dir))
	p.stop(t, syscall.SIGTERM)
	id, err := backup.Latest(t.Context(), mustDirStore(t, store))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := backup.Verify(t.Context(), mustDirStore(t, store), id, nil); err != nil || m.Segments() == 0 {
		t.Fatalf("backup: %d segments, %v", m.Segments(), err)
	}

	return store
}
