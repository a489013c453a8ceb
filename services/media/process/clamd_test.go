package process

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeClamd speaks enough of clamd's INSTREAM protocol for the tests: it
// reads the command and the chunks, and answers FOUND when the stream
// holds the EICAR string, OK otherwise. reply, when set, is sent
// instead; limit, when set, makes it answer like clamd past
// StreamMaxLength.
type fakeClamd struct {
	ln    net.Listener
	reply string
	limit int
	got   chan []byte
}

func startClamd(t *testing.T, network string) *fakeClamd {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "clamd.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeClamd{ln: ln, got: make(chan []byte, 10)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *fakeClamd) addr() string { return s.ln.Addr().Network() + ":" + s.ln.Addr().String() }

func (s *fakeClamd) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	cmd, err := r.ReadString(0)
	if err != nil || cmd != "zINSTREAM\x00" {
		c.Write([]byte("UNKNOWN COMMAND\x00"))
		return
	}
	var data []byte
	for {
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(l[:])
		if n == 0 {
			break
		}
		chunk := make([]byte, n)
		if _, err := io.ReadFull(r, chunk); err != nil {
			return
		}
		data = append(data, chunk...)
		if s.limit > 0 && len(data) > s.limit {
			c.Write([]byte("INSTREAM size limit exceeded. ERROR\x00"))
			return
		}
	}
	s.got <- data
	switch {
	case s.reply != "":
		c.Write([]byte(s.reply))
	case bytes.Contains(data, eicar()):
		c.Write([]byte("stream: Eicar-Signature FOUND\x00"))
	default:
		c.Write([]byte("stream: OK\x00"))
	}
}

func TestClamd(t *testing.T) {
	// Put the EICAR string in the middle of a large file, where the
	// built-in check does not look: only clamd can find it there.
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	infected := append(append(append([]byte(nil), big...), eicar()...), big...)
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			s := startClamd(t, network)
			cfg := Config{ClamdAddr: s.addr()}
			p := writeFile(t, "clean", big)
			if err := Scan(context.Background(), cfg, p, Detection{Size: int64(len(big))}); err != nil {
				t.Fatalf("clean: %v", err)
			}
			if got := <-s.got; !bytes.Equal(got, big) {
				t.Fatalf("clamd got %d bytes, want %d", len(got), len(big))
			}
			p = writeFile(t, "infected", infected)
			err := Scan(context.Background(), cfg, p, Detection{Size: int64(len(infected))})
			if Reason(err) != "infected" || !strings.Contains(err.Error(), "Eicar-Signature") {
				t.Fatalf("infected: %v", err)
			}
		})
	}
}

func TestClamdUnavailable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "tcp:" + ln.Addr().String()
	ln.Close()

	limited := startClamd(t, "tcp")
	limited.limit = 100 << 10
	garbled := startClamd(t, "tcp")
	garbled.reply = "what?\x00"

	silent, _ := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	t.Cleanup(func() { silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()

	data := bytes.Repeat([]byte("x"), 300<<10)
	for name, cfg := range map[string]Config{
		"no daemon":   {ClamdAddr: dead},
		"bad address": {ClamdAddr: "udp:1.2.3.4:5"},
		"size limit":  {ClamdAddr: limited.addr()},
		"garbled":     {ClamdAddr: garbled.addr()},
		"timeout":     {ClamdAddr: "tcp:" + silent.Addr().String(), ClamdTimeout: 200 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			p := writeFile(t, "f", data)
			err := Scan(context.Background(), cfg, p, Detection{Size: int64(len(data))})
			if Reason(err) != "scan_unavailable" {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestParseClamdReply(t *testing.T) {
	tests := []struct{ reply, reason string }{
		{"stream: OK\x00", ""},
		{"stream: OK\n", ""},
		{"1: stream: OK\x00", ""},
		{"stream: Eicar-Signature FOUND\x00", "infected"},
		{"stream: Win.Trojan.Agent-123 FOUND\x00", "infected"},
		{"stream:  FOUND\x00", "scan_unavailable"},
		{"stream: FOUND\x00", "scan_unavailable"},
		{"INSTREAM size limit exceeded. ERROR\x00", "scan_unavailable"},
		{"stream: lstat() failed ERROR\x00", "scan_unavailable"},
		{"", "scan_unavailable"},
		{"OK", "scan_unavailable"},
	}
	for _, tt := range tests {
		if got := Reason(parseClamdReply(tt.reply)); got != tt.reason {
			t.Errorf("%q: reason %q, want %q", tt.reply, got, tt.reason)
		}
	}
}
