//go:build unix

package sysmon

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary act as the program being started again:
// with SYSMON_TEST_CHILD set it runs Reexec and prints what it ended up
// with instead of running the tests.
func TestMain(m *testing.M) {
	if os.Getenv("SYSMON_TEST_CHILD") != "" {
		if os.Getenv("SYSMON_TEST_DELETE_SELF") != "" && !strings.Contains(os.Getenv("GODEBUG"), Setting) {
			// Another build takes this path before the exec (an upgrade).
			exe, _ := os.Executable()
			if err := os.Remove(exe); err != nil {
				fmt.Println("remove:", err)
			}
		}
		err := Reexec()
		fmt.Printf("pid=%d godebug=%q args=%q err=%v\n", os.Getpid(), os.Getenv("GODEBUG"), os.Args[1:], err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(t *testing.T, godebug string, env ...string) string {
	t.Helper()
	return runChildOf(t, os.Args[0], godebug, env...)
}

func runChildOf(t *testing.T, program, godebug string, env ...string) string {
	t.Helper()
	cmd := exec.Command(program, "-test.run=^$", "extra arg")
	// The child's GODEBUG and GOMAXPROCS are the test's alone.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(cmd.Env, "SYSMON_TEST_CHILD=1"), env...)
	if godebug != "" {
		cmd.Env = append(cmd.Env, "GODEBUG="+godebug)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("pid=%d ", cmd.Process.Pid)) {
		t.Fatalf("the child did not run as the process started (pid %d):\n%s", cmd.Process.Pid, out)
	}
	return string(out)
}

func TestReexecStartsTheProgramAgainWithTheSetting(t *testing.T) {
	out := runChild(t, "", "GOMAXPROCS=2")
	want := fmt.Sprintf("godebug=%q args=%q err=<nil>", Setting, []string{"-test.run=^$", "extra arg"})
	if !strings.Contains(out, want) {
		t.Fatalf("child printed\n%s\nwant %s", out, want)
	}
	// Other settings stay, in front.
	out = runChild(t, "madvdontneed=1", "GOMAXPROCS=2")
	if want := fmt.Sprintf("godebug=%q", "madvdontneed=1,"+Setting); !strings.Contains(out, want) {
		t.Fatalf("child printed\n%s\nwant %s", out, want)
	}
}

func TestReexecLeavesTheOperatorsSchedtrace(t *testing.T) {
	out := runChild(t, "schedtrace=0")
	if want := `godebug="schedtrace=0"`; !strings.Contains(out, want) {
		t.Fatalf("child printed\n%s\nwant %s", out, want)
	}
}

func TestReexecLeavesAOnePProcess(t *testing.T) {
	out := runChild(t, "", "GOMAXPROCS=1")
	if want := `godebug="" args=`; !strings.Contains(out, want) {
		t.Fatalf("child printed\n%s\nwant %s", out, want)
	}
}
