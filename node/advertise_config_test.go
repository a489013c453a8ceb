package node

import (
	"errors"
	"testing"
)

// --advertise-mqtt and --advertise-ws are what /cluster/connect hands to
// clients (the web page follows ws only when it is a ws:// or wss:// URL
// and derives the node's API from it). A value without a scheme or host
// used to be taken silently, and clients were sent nowhere; it is refused
// at start now, naming the setting.
func TestAdvertisedURLsAreChecked(t *testing.T) {
	bad := map[string][]string{
		"mqtt without scheme": {"--advertise-mqtt", "chat1.example.com:1883"},
		"mqtt as http":        {"--advertise-mqtt", "http://chat1.example.com:1883"},
		"mqtt without host":   {"--advertise-mqtt", "tcp://"},
		"ws without scheme":   {"--advertise-ws", "chat1.example.com:8080/mqtt"},
		"ws as https":         {"--advertise-ws", "https://chat1.example.com/mqtt"},
		"ws without host":     {"--advertise-ws", "wss:///mqtt"},
	}
	for name, args := range bad {
		if _, err := LoadConfig(args, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", name, err)
		}
	}
	good := [][]string{
		{"--advertise-mqtt", "tcp://chat1.example.com:1883"},
		{"--advertise-mqtt", "mqtt://chat1.example.com:1883"}, // deploy/compose.yaml
		{"--advertise-mqtt", "tls://chat1.example.com:8883"},
		{"--advertise-mqtt", "mqtts://chat1.example.com:8883"},
		{"--advertise-ws", "ws://chat1.example.com:8080/mqtt"},
		{"--advertise-ws", "wss://chat1.example.com/mqtt"},
	}
	for _, args := range good {
		if _, err := LoadConfig(args, nil); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}
