package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/services/backup"
)

// TestARestoreKilledWhileLoadingTheStateLeavesNoNode: `edgechat
// restore` killed (SIGKILL, a power cut) while it loads the state into
// {data}/db must not leave a database that `serve` starts on: the
// database then holds part of the backup's keys, or none, and no applied
// index, so serve bootstrapped a new cluster at log index 1 on it (half
// the accounts, half the history, or nothing) as if the restore had
// worked. Serve refuses the data directory, naming the interrupted
// restore, and the restore run again builds the node.
func TestARestoreKilledWhileLoadingTheStateLeavesNoNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	bin := edgechatBinary(t)
	dir, store := t.TempDir(), t.TempDir()
	serveArgs := func(data string) []string {
		return []string{"--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
			"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off"}
	}
	p := startServe(t, bin, serveArgs(dir)...)
	for _, u := range []string{"root", "alice"} {
		runCLI(t, bin, "a long password\n", "user", "add", u, "--password-stdin", "--server", p.http)
	}
	runCLI(t, bin, "", "backup", "--to", store, "--server", p.http, "--data", dir)
	p.stop(t, syscall.SIGTERM)
	id := padBackupState(t, store, 40<<20) // loading takes long enough to be killed in

	data := t.TempDir()
	cmd := exec.Command(bin, "restore", "--from", store, "--data", data)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Killed once the state is being staged in the new database.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m, _ := filepath.Glob(filepath.Join(data, "*", "edgechat-snapshot-*")); len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("restore never staged the state: %s", out.String())
		}
		time.Sleep(time.Millisecond)
	}
	_ = cmd.Process.Kill()
	if err := cmd.Wait(); err == nil {
		t.Skipf("the restore finished before it was killed: %s", out.String())
	}

	// serve on what the killed restore left: refused, not a new cluster.
	sp := startProc(t, nil, bin, serveArgs(data)...)
	select {
	case <-sp.ready:
		var boot []string
		for _, l := range strings.Split(sp.logs.String(), "\n") {
			if strings.Contains(l, "bootstrapped") {
				boot = append(boot, l)
			}
		}
		t.Fatalf("serve started on the data directory of a restore of %s killed half-way: %s", id, strings.Join(boot, "\n"))
	case <-sp.exited:
		if logs := sp.logs.String(); !strings.Contains(logs, "restore") {
			t.Fatalf("serve refused the data directory of a killed restore without naming it: %v\n%s", sp.err, logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve neither started nor refused")
	}

	// The restore run again builds the node; alice signs in with her password.
	t.Log(runCLI(t, bin, "", "restore", "--from", store, "--data", data))
	p2 := startServe(t, bin, serveArgs(data)...)
	var tok struct{ AccessToken string }
	if st, err := httpJSON("POST", p2.http+"/auth/login", "", map[string]string{"username": "alice", "password": "a long password"}, &tok); err != nil || st != 200 || tok.AccessToken == "" {
		t.Fatalf("alice's sign-in on the restored node: %d %v", st, err)
	}
}

// padBackupState adds n bytes of keys no service reads (r/zz-pad/…) to
// the state of the newest backup in store and rewrites its manifest,
// and returns the backup's ID.
func padBackupState(t *testing.T, store string, n int) string {
	t.Helper()
	id, err := backup.Latest(t.Context(), mustDirStore(t, store))
	if err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(store, id, backup.StateName)
	st, err := os.ReadFile(sp)
	if err != nil || len(st) == 0 || st[len(st)-1] != 0 {
		t.Fatalf("state: %v", err)
	}
	st = st[:len(st)-1] // the end marker
	val := bytes.Repeat([]byte("x"), 4096)
	for i := 0; i*len(val) < n; i++ {
		k := fmt.Sprintf("r/zz-pad/%08d", i)
		st = binary.AppendUvarint(st, uint64(len(k)))
		st = append(st, k...)
		st = binary.AppendUvarint(st, uint64(len(val)))
		st = append(st, val...)
	}
	st = append(st, 0)
	writeBackupState(t, store, id, sp, st)
	return id
}

// TestBackupsAndRestoredNodesAreAsPrivateAsADataDirectory: a backup
// holds the cluster's secrets (the Web Push private key, password and
// refresh-token hashes, push tokens: operations.md, Backups), and serve
// keeps its data directory 0700. `edgechat backup` wrote the backup's
// directories 0750 and files 0640 (readable by the service's group),
// and `edgechat restore` made the new node's data directory 0755 (its
// local archive store created it first), so every local user could list
// the restored node's files, the archive's segment names (who talked to
// whom, and when) among them.
func TestBackupsAndRestoredNodesAreAsPrivateAsADataDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	old := syscall.Umask(0o022) // the usual one; the test's modes do not depend on the caller's
	defer syscall.Umask(old)
	bin := edgechatBinary(t)
	dir := filepath.Join(t.TempDir(), "n1")
	store := filepath.Join(t.TempDir(), "backups")
	p := startServe(t, bin, "--data", dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off")
	runCLI(t, bin, "a long password\n", "user", "add", "root", "--password-stdin", "--server", p.http)
	runCLI(t, bin, "", "backup", "--to", store, "--server", p.http, "--data", dir)
	p.stop(t, syscall.SIGTERM)
	data := filepath.Join(t.TempDir(), "restored")
	runCLI(t, bin, "", "restore", "--from", store, "--data", data)

	var bad []string
	check := func(root string, dirMode, fileMode os.FileMode) {
		err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			want := fileMode
			if fi.IsDir() {
				want = dirMode
			}
			if fi.Mode().Perm()&^want != 0 {
				bad = append(bad, fmt.Sprintf("%s %v (want at most %v)", p, fi.Mode().Perm(), want))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check(store, 0o700, 0o600)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("serve's data directory: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(data); err != nil || fi.Mode().Perm() != 0o700 {
		bad = append(bad, fmt.Sprintf("the restored data directory %s %v (serve makes its own 0700)", data, fi.Mode().Perm()))
	}
	if len(bad) > 0 {
		t.Fatalf("open to others:\n%s", strings.Join(bad, "\n"))
	}
}

// TestRestoreRefusesABackupOfANewerVersion: a backup whose cluster runs
// a feature level above this binary's (taken by a newer edgechat) is
// refused, with the version that took it named and no database left:
// restored, the older binary ran the cluster at that level by its own,
// older rules, which operations.md tells never to do (Rolling upgrades:
// do not go back below the level).
func TestRestoreRefusesABackupOfANewerVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	bin := edgechatBinary(t)
	dir, store := t.TempDir(), t.TempDir()
	p := startServe(t, bin, "--data", dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off")
	runCLI(t, bin, "a long password\n", "user", "add", "root", "--password-stdin", "--server", p.http)
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		var st struct{ FeatureLevel uint32 }
		if _, err := httpJSON("GET", p.http+"/cluster/status", operatorTok(t, dir), nil, &st); err != nil {
			return err
		}
		if st.FeatureLevel != featurelevel.Supported {
			return fmt.Errorf("feature level %d", st.FeatureLevel)
		}
		return nil
	})
	runCLI(t, bin, "", "backup", "--to", store, "--server", p.http, "--data", dir)
	p.stop(t, syscall.SIGTERM)
	newer := featurelevel.Supported + 1
	rewriteBackupState(t, store, func(k, v []byte) []byte {
		if string(k) == string(featurelevel.Key) {
			return featurelevel.Payload(newer)
		}
		return v
	})
	data := t.TempDir()
	out, err := runCLIErr(bin, "", "restore", "--from", store, "--data", data)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("feature level %d", newer)) {
		t.Fatalf("restore of a backup at feature level %d (this edgechat supports %d): %v %s", newer, featurelevel.Supported, err, out)
	}
	for _, d := range []string{"db", backup.RestoringDB} {
		if _, err := os.Stat(filepath.Join(data, d)); err == nil {
			t.Errorf("the refused restore left %s/", d)
		}
	}
}

// rewriteBackupState passes every key of the newest backup's state in
// store through fn (its new value) and rewrites the manifest.
func rewriteBackupState(t *testing.T, store string, fn func(k, v []byte) []byte) {
	t.Helper()
	id, err := backup.Latest(t.Context(), mustDirStore(t, store))
	if err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(store, id, backup.StateName)
	st, err := os.ReadFile(sp)
	if err != nil {
		t.Fatal(err)
	}
	const head = len("ECSNAP1\n") + 8
	out := append([]byte(nil), st[:head]...)
	r := bytes.NewReader(st[head:])
	for {
		kl, err := binary.ReadUvarint(r)
		if err != nil {
			t.Fatal(err)
		}
		if kl == 0 {
			break
		}
		k := make([]byte, kl)
		_, _ = r.Read(k)
		vl, _ := binary.ReadUvarint(r)
		v := make([]byte, vl)
		_, _ = r.Read(v)
		v = fn(k, v)
		out = binary.AppendUvarint(out, kl)
		out = append(out, k...)
		out = binary.AppendUvarint(out, uint64(len(v)))
		out = append(out, v...)
	}
	out = append(out, 0)
	writeBackupState(t, store, id, sp, out)
}

// writeBackupState writes state as the state file sp of backup id in
// the directory store, and its size and checksum into the manifest, so
// that the backup stays one a restore takes.
func writeBackupState(t *testing.T, store, id, sp string, state []byte) {
	t.Helper()
	if err := os.WriteFile(sp, state, 0o600); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(store, id, backup.ManifestName)
	mb, err := os.ReadFile(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := backup.ParseManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(state)
	m.Files[0].Size, m.Files[0].SHA256 = int64(len(state)), hex.EncodeToString(sum[:])
	if err := os.WriteFile(mp, m.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
}
