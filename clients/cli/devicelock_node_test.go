//go:build unix

package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// Two runs of `edgechat chat` with the same --device are one MQTT
// client ID (user/device) twice: each connection takes the other's over
// and both reconnect in turn (each reconnection reloading the lists,
// into 429s), and one could end up shown online but receiving nothing,
// while the other saved the shared sync cursor past what it never
// showed. A second run on the same user, server and device now stops at
// once and says why; the first goes on receiving.
func TestASecondRunOnTheSameDeviceIsRefused(t *testing.T) {
	n := nodetest.StartNode(t)
	annTok := n.NewUser(t, "ann")
	bob := dialSDK(t, n, n.NewUser(t, "bob"), nil)
	cfg := Config{Server: n.HTTPURL, Token: annTok, Device: "laptop", StateDir: t.TempDir()}

	first := startTerminal(t, cfg)
	first.waitShown("edgechat — ann")

	second := startTerminal(t, cfg)
	var err error
	select {
	case err = <-second.done:
		second.done <- err // for the cleanup
	case <-time.After(15 * time.Second):
		err = fmt.Errorf("still running after 15s, connected as ann/laptop beside the first")
	}
	if !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "--device") {
		t.Errorf("a second run with --device laptop: %v, want ErrDeviceInUse naming --device", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bob.SendMessage(ctx, edgechat.Message{To: "ann", Type: "text", Body: "still there?", CID: edgechat.NewCID()}); err != nil {
		t.Fatal(err)
	}
	first.waitShown("still there?")
	first.quit()

	// Once the first run has quit, the device is free again.
	third := startTerminal(t, cfg)
	third.waitShown("edgechat — ann")
	third.quit()
}
