//go:build unix && !nochat

package main

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// `edgechat chat` signed in with the password ends its session when its
// terminal closes (SIGHUP) as when the user quits: before, SIGHUP's
// default action killed the process on the spot, so every terminal
// window closed on a running client left one more session in the
// user's list (by hand: 4 sessions, one client run in tmux and its pane
// killed, 5), for as long as its refresh token lived.
func TestChatEndsItsSessionWhenItsTerminalCloses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a real process")
	}
	bin := edgechatBinary(t)
	data := t.TempDir()
	p := startServe(t, bin, "--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "", "--cluster-addr", "127.0.0.1:0")
	runCLI(t, bin, "a long password\n", "user", "add", "alice", "--password-stdin", "--server", p.http)
	tok := mintToken(t, bin, data, "alice", p)

	cmd := exec.Command(bin, "chat", "--server", p.http, "--user", "alice", "--device", "laptop")
	cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir(), "XDG_CONFIG_HOME=")
	keys, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	screen := &logSink{}
	cmd.Stdout, cmd.Stderr = screen, screen
	dieWithTheTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
	}()
	if _, err := io.WriteString(keys, "a long password\n"); err != nil {
		t.Fatal(err)
	}
	laptop := func() (bool, error) {
		var list struct {
			Sessions []struct{ Device string }
		}
		if code, err := httpJSON("GET", p.http+"/auth/sessions", tok, nil, &list); err != nil || code != 200 {
			return false, fmt.Errorf("GET /auth/sessions: %d %v", code, err)
		}
		for _, s := range list.Sessions {
			if s.Device == "laptop" {
				return true, nil
			}
		}
		return false, nil
	}
	nodetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if ok, err := laptop(); err != nil || !ok {
			return fmt.Errorf("the laptop's session is not listed (%v)", err)
		}
		if !strings.Contains(screen.String(), "edgechat — alice") {
			return fmt.Errorf("the chat screen is not up: %q", screen.String())
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("edgechat chat did not exit after SIGHUP")
	}
	if ok, err := laptop(); err != nil || ok {
		t.Fatalf("after SIGHUP the laptop's session is still listed: %v (%v)", ok, err)
	}
}
