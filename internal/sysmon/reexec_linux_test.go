package sysmon

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The exec runs the file this process was started from, even when its
// path no longer leads there.
func TestReexecRunsThisFileWhenItsPathIsGone(t *testing.T) {
	copyPath := filepath.Join(t.TempDir(), "program")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(copyPath, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	out := runChildOf(t, copyPath, "", "GOMAXPROCS=2", "SYSMON_TEST_DELETE_SELF=1")
	if want := fmt.Sprintf("godebug=%q", Setting); !strings.Contains(out, want) {
		t.Fatalf("child printed\n%s\nwant %s", out, want)
	}
	if _, err := os.Stat(copyPath); !os.IsNotExist(err) {
		t.Fatalf("the child did not remove its program first: %v", err)
	}
}
