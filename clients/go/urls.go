package edgechat

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// brokerURLs parses and normalises the broker URLs: known schemes only,
// default ports for TCP (1883) and TLS (8883), and "/mqtt" as the path of
// a WebSocket URL that has none.
func brokerURLs(raw []string) ([]*url.URL, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: no broker URL", ErrBadOptions)
	}
	out := make([]*url.URL, 0, len(raw))
	for _, s := range raw {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%w: broker URL %q: %v", ErrBadOptions, s, err)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("%w: broker URL %q has no host", ErrBadOptions, s)
		}
		u.Scheme = strings.ToLower(u.Scheme)
		switch u.Scheme {
		case "ws", "wss":
			if u.Path == "" || u.Path == "/" {
				u.Path = "/mqtt"
			}
		case "tcp", "mqtt":
			u.Host = withPort(u.Host, "1883")
		case "tls", "mqtts", "ssl":
			u.Host = withPort(u.Host, "8883")
		default:
			return nil, fmt.Errorf("%w: broker URL %q: scheme must be ws, wss, tcp, mqtt, tls or mqtts", ErrBadOptions, s)
		}
		out = append(out, u)
	}
	return out, nil
}

func withPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// httpURLFromBroker derives the HTTP API base URL from the first
// WebSocket broker URL: the WebSocket endpoint is served at /mqtt of the
// HTTP server, so ws://h:p/x/mqtt gives http://h:p/x.
func httpURLFromBroker(urls []*url.URL) (string, error) {
	for _, u := range urls {
		var scheme string
		switch u.Scheme {
		case "ws":
			scheme = "http"
		case "wss":
			scheme = "https"
		default:
			continue
		}
		path := strings.TrimSuffix(strings.TrimRight(u.Path, "/"), "/mqtt")
		return (&url.URL{Scheme: scheme, Host: u.Host, Path: path}).String(), nil
	}
	return "", fmt.Errorf("%w: HTTPURL or HTTPURLs is required when no ws:// or wss:// broker URL is given", ErrBadOptions)
}

// WebSocketURL returns the MQTT-over-WebSocket URL of a node from its
// HTTP base URL: http://h:p/x gives ws://h:p/x/mqtt.
func WebSocketURL(httpURL string) (string, error) {
	u, err := url.Parse(httpURL)
	if err != nil {
		return "", fmt.Errorf("%w: server URL %q: %v", ErrBadOptions, httpURL, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("%w: server URL %q must start with http:// or https://", ErrBadOptions, httpURL)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%w: server URL %q has no host", ErrBadOptions, httpURL)
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/mqtt"
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// httpURLsFromBroker derives the HTTP base URL of every ws(s) broker URL,
// in order, without duplicates: the API of the node behind each.
func httpURLsFromBroker(urls []*url.URL) []string {
	var out []string
	for _, u := range urls {
		if one, err := httpURLFromBroker([]*url.URL{u}); err == nil && !slices.Contains(out, one) {
			out = append(out, one)
		}
	}
	return out
}

// apiURLs is the list of API base URLs a client tries: httpURL, then
// more, without duplicates; when both are empty, the API of the node of
// each ws(s) broker URL (so that sync and history keep working on
// another node when one dies).
func apiURLs(httpURL string, more []string, brokers []*url.URL) ([]string, error) {
	var out []string
	for _, raw := range append([]string{httpURL}, more...) {
		if raw == "" {
			continue
		}
		s := strings.TrimRight(raw, "/")
		if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: HTTP API URL %q must be an http(s) URL", ErrBadOptions, raw)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if _, err := httpURLFromBroker(brokers); err != nil {
		return nil, err
	}
	return httpURLsFromBroker(brokers), nil
}
