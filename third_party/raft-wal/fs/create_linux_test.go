package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// PATCHES.md: a segment file whose preallocation failed is removed, so
// that the rotation, tried again, can create it under the same name (the
// create is O_EXCL). The failure is a real one: a child process (this
// test binary) runs with a file size limit below the preallocation.

const fsizeChildEnv = "RAFTWAL_FSIZE_CHILD_DIR"

func TestCreateRemovesAFileItCouldNotPreallocate(t *testing.T) {
	if dir := os.Getenv(fsizeChildEnv); dir != "" {
		lim := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			t.Fatal(err)
		}
		if f, err := New().Create(dir, "seg.wal", 4<<20); err == nil {
			_ = f.Close()
			t.Fatal("a 4 MB preallocation succeeded under a 1 MB file size limit")
		}
		if _, err := os.Stat(filepath.Join(dir, "seg.wal")); !os.IsNotExist(err) {
			t.Fatalf("the file is left after the failed create: %v", err)
		}
		f, err := New().Create(dir, "seg.wal", 512<<10)
		if err != nil {
			t.Fatalf("creating the same name again: %v", err)
		}
		_ = f.Close()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCreateRemovesAFileItCouldNotPreallocate$", "-test.v")
	cmd.Env = append(os.Environ(), fsizeChildEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
