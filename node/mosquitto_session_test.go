package node_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A phone on the stock Mosquitto clients keeps an MQTT 3.1.1 session
// (clean session 0) and goes away while more direct messages are sent to
// it than a session holds (1,024). Back, it resumed the session (session
// present 1) with the 1,024 oldest, and the newest were dropped without
// a trace: a client that trusts its session never showed them. Now the
// session that could not hold a message is ended: the phone comes back
// to a new session (none of the old messages resent), subscribes again
// and gets what it missed from /chat/sync, as protocol.md asks.
func TestMosquittoPhoneBackToAnOverflowedSessionStartsAnew(t *testing.T) {
	subBin, pubBin := mosquittoClients(t)
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	addr := strings.TrimPrefix(n.MQTTURL, "tcp://")
	bobArgs := append(hostPort(addr), "-V", "mqttv311", "-i", "bob/phone", "-c", "-q", "1",
		"-u", "bob", "-P", bobTok, "-t", "user/bob/newMessage")

	// bob subscribes with a kept session, then leaves (-E: exit once
	// subscribed; his session stays).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, subBin, append(bobArgs, "-E")...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_sub -E: %v: %s", err, out)
	}

	// alice sends him 1,025 messages, one per line.
	const sent = 1025
	var lines strings.Builder
	for i := range sent {
		fmt.Fprintf(&lines, `{"cid":"m%d","type":"text","body":"hello %d"}`+"\n", i, i)
	}
	pub := exec.CommandContext(ctx, pubBin, append(hostPort(addr), "-V", "mqttv311", "-i", "alice/laptop", "-q", "1",
		"-u", "alice", "-P", aliceTok, "-t", "user/bob/newMessage", "-l")...)
	pub.Stdin = strings.NewReader(lines.String())
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub -l: %v: %s", err, out)
	}

	// bob comes back; alice then sends one more, which he gets live.
	s := startMosqSub(t, subBin, bobArgs...)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mosqPub(t, pubBin, addr, "-V", "mqttv311", "-i", "alice/laptop", "-u", "alice", "-P", aliceTok,
			"-t", "user/bob/newMessage", "-m", fmt.Sprintf(`{"cid":"after-%d","type":"text","body":"back?"}`, time.Now().UnixNano()))
		if !strings.Contains(s.out.String(), `"cid":"after-`) {
			return fmt.Errorf("bob has not got a message sent after he came back (stderr %q)", s.err.String())
		}
		return nil
	})
	var resent int
	for _, l := range strings.Split(strings.TrimSpace(s.out.String()), "\n") {
		if strings.Contains(l, `"cid":"m`) {
			resent++
		}
	}
	if resent > 0 {
		t.Fatalf("bob's session was resumed with %d of the %d messages sent while he was away: the rest were dropped and he cannot tell", resent, sent)
	}
}
