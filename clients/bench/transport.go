package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/edgechat/edgechat/internal/wsnet"
)

// The bench speaks MQTT over TCP ("host:port", "tcp://host:port") or over
// WebSocket ("ws://host:port/mqtt", the node's HTTP listener), dialled by
// internal/wsnet (gorilla/websocket as a net.Conn for paho).

// isWS reports whether addr is a WebSocket URL.
func isWS(addr string) bool { return strings.HasPrefix(addr, "ws://") }

// dialConn opens the byte stream an MQTT session runs on.
func dialConn(ctx context.Context, addr string) (net.Conn, error) {
	if !isWS(addr) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("dialing %s: %w", addr, err)
		}
		return c, nil
	}
	c, err := wsnet.Dial(ctx, addr, nil)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return c, nil
}

// wsURL turns an HTTP base URL (http://h:p) into the node's MQTT over
// WebSocket URL (ws://h:p/mqtt); a ws:// URL is kept.
func wsURL(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "ws://"):
		return s, nil
	case strings.HasPrefix(s, "http://"):
		return "ws://" + strings.TrimSuffix(strings.TrimPrefix(s, "http://"), "/") + "/mqtt", nil
	}
	return "", fmt.Errorf("--ws: want an http:// base URL or a ws:// URL, not %q", s)
}

// mqttAddrs parses a comma-separated list of MQTT addresses.
func mqttAddrs(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if isWS(a) {
			out = append(out, a)
			continue
		}
		h, err := mqttAddr(a)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no MQTT address in %q", s)
	}
	return out, nil
}

// FreePorts binds n listeners on 127.0.0.1:0 at once (so the ports are
// distinct), notes their ports and closes them: a script starting
// servers asks for its ports this way instead of guessing.
func FreePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
