package region

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/edgechat/edgechat/internal/address"
)

// Link is one configured link to another region: its name (the other
// region's name), the URL of that region's MQTT listener (tcp:// or
// tls://, or wss:// and ws:// to its MQTT over WebSocket at /mqtt) and
// the shared secret both sides know ("" when the links authenticate with
// certificates only, Config.LinkCA).
type Link struct {
	Name   string
	URL    string
	Secret string
	// AlsoAccepted are further secrets the other region's link may
	// present, while a secret is rotated (ParseSecrets); this side
	// sends Secret.
	AlsoAccepted []string
}

// MinSecretLen is the shortest link secret accepted.
const MinSecretLen = 16

// ErrConfig marks a bad link configuration.
var ErrConfig = errors.New("region: invalid link configuration")

// ParseLink reads --link NAME=URL.
func ParseLink(s string) (Link, error) {
	name, raw, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return Link{}, fmt.Errorf("%w: %q: want NAME=URL (e.g. us=tls://mqtt.us.example.com:8883)", ErrConfig, s)
	}
	if err := address.ValidRegion(name); err != nil {
		return Link{}, fmt.Errorf("%w: link name %q: %v", ErrConfig, name, err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Link{}, fmt.Errorf("%w: link %s: %v", ErrConfig, name, err)
	}
	switch u.Scheme {
	case "tcp", "tls":
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			return Link{}, fmt.Errorf("%w: link %s: %q: want %s://HOST:PORT", ErrConfig, name, raw, u.Scheme)
		}
		return Link{Name: name, URL: u.Scheme + "://" + u.Host}, nil
	case "ws", "wss":
		// The other region's gateway: MQTT over WebSocket at /mqtt
		// (another path for a proxy in front of it); the port may be
		// left to the scheme's.
		if u.Host == "" || u.User != nil || u.Fragment != "" {
			return Link{}, fmt.Errorf("%w: link %s: %q: want %s://HOST[:PORT]/mqtt", ErrConfig, name, raw, u.Scheme)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/mqtt"
		}
		return Link{Name: name, URL: u.String()}, nil
	}
	return Link{}, fmt.Errorf("%w: link %s: scheme %q (want tcp, tls, wss or ws)", ErrConfig, name, u.Scheme)
}

// ParseSecrets reads a --link-secret-file: either lines of secrets
// every link shares, or lines NAME=SECRET for the links (names are the
// configured links'). Blank lines and lines starting with # are skipped.
// A link's first secret is the one its connections present; its later
// ones are accepted from the other region too, so that a secret can be
// rotated without the links going down (docs/regions.md). Every link
// must end with secrets of at least MinSecretLen bytes each.
func ParseSecrets(data []byte, links []string) (map[string][]string, error) {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: secret file: %v", ErrConfig, err)
	}
	known := map[string]bool{}
	for _, n := range links {
		known[n] = true
	}
	out := map[string][]string{}
	perLink := 0
	for _, l := range lines {
		if name, secret, ok := strings.Cut(l, "="); ok && known[name] {
			out[name] = append(out[name], secret)
			perLink++
		}
	}
	switch {
	case perLink > 0 && perLink != len(lines):
		return nil, fmt.Errorf("%w: secret file: mixes NAME=SECRET lines with other lines (or names no configured link)", ErrConfig)
	case perLink == 0:
		for _, n := range links {
			out[n] = lines
		}
	}
	for _, n := range links {
		if len(out[n]) == 0 {
			return nil, fmt.Errorf("%w: link %s: secret missing", ErrConfig, n)
		}
		for _, s := range out[n] {
			if len(s) < MinSecretLen {
				return nil, fmt.Errorf("%w: link %s: secret shorter than %d bytes", ErrConfig, n, MinSecretLen)
			}
		}
	}
	return out, nil
}
