//go:build linux && !nochat

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: the controlling side and the
// terminal a process reads as its own.
func openPTY(t *testing.T) (ctl, tty *os.File) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ctl.Close() })
	if err := unix.IoctlSetPointerInt(int(ctl.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ctl.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return ctl, tty
}

// Ctrl+C at `edgechat chat`'s password prompt stops it at once and
// leaves the terminal echoing: the prompt read the terminal without
// heeding the signal, so the command hung for EDGECHAT_STOP_TIMEOUT
// (45 s) and then exited saying it 'did not stop'; a second Ctrl+C
// killed it with the terminal's echo still off (what the user typed in
// the shell afterwards was invisible).
func TestCtrlCAtThePasswordPromptStopsAndLeavesTheTerminalEchoing(t *testing.T) {
	ctrlCAtThePasswordPrompt(t, "chat", "--server", "http://127.0.0.1:1", "--user", "alice")
}

// `edgechat user add NAME --password-stdin` and `user passwd` at a
// terminal read the password without echoing it, and Ctrl+C there stops
// them at once: the password was shown as it was typed, and Ctrl+C hung
// the command for 45 s.
func TestAPasswordTypedForUserAddIsNotEchoed(t *testing.T) {
	ctrlCAtThePasswordPrompt(t, "user", "add", "bob", "--password-stdin", "--server", "http://127.0.0.1:1")
	ctrlCAtThePasswordPrompt(t, "user", "passwd", "bob", "--password-stdin", "--server", "http://127.0.0.1:1", "--data", dataDirWithSigningKey(t))
}

// ctrlCAtThePasswordPrompt runs edgechat args on a pseudo-terminal,
// waits until it reads a password with the echo off, sends SIGINT and
// checks that it stops within seconds, leaving the echo on.
func ctrlCAtThePasswordPrompt(t *testing.T, args ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a real process")
	}
	bin := edgechatBinary(t)
	ctl, tty := openPTY(t)
	go func() { // the terminal's output, drained
		b := make([]byte, 4096)
		for {
			if _, err := ctl.Read(b); err != nil {
				return
			}
		}
	}()
	name := "edgechat " + strings.Join(args, " ")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir(), "XDG_CONFIG_HOME=", "EDGECHAT_STOP_TIMEOUT=20s")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	dieWithTheTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Wait for the prompt to have turned the echo off.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("%s: the password is read with the terminal's echo on", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("%s did not stop within 10 s of Ctrl+C at its password prompt", name)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("%s took %v to stop after Ctrl+C at its password prompt", name, took)
	}
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&unix.ECHO == 0 {
		t.Errorf("%s: after Ctrl+C at the password prompt the terminal's echo is off (lflag %#x)", name, tio.Lflag)
	}
}
