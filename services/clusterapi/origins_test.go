package clusterapi

import (
	"slices"
	"testing"
)

func TestOriginsFollowTheMembers(t *testing.T) {
	o := NewOrigins()
	if o.Allowed("http://127.0.0.1:8080") {
		t.Fatal("allowed before the first refresh")
	}
	o.update([]NodeView{
		{NodeInfo: NodeInfo{Name: "n1", HTTP: "http://127.0.0.1:8080", WS: "ws://127.0.0.1:8080/mqtt"}},
		{NodeInfo: NodeInfo{Name: "n2", HTTP: "https://N2.example.com", WS: "wss://n2.example.com/mqtt"}},
		{NodeInfo: NodeInfo{Name: "n3", HTTP: "javascript:alert(1)", WS: "ws://a b/"}}, // nothing usable
		{NodeInfo: NodeInfo{Name: "n4", HTTP: "http://x'; script-src *", WS: "ftp://n4/"}},
	})
	for origin, want := range map[string]bool{
		"http://127.0.0.1:8080":          true,
		"https://n2.example.com":         true,
		"HTTPS://n2.example.com":         true,
		"https://n2.example.com:443":     false, // origins match exactly
		"http://n2.example.com":          false,
		"https://evil.example.com":       false,
		"null":                           false,
		"":                               false,
		"https://n2.example.com.evil.io": false,
	} {
		if got := o.Allowed(origin); got != want {
			t.Errorf("Allowed(%q) = %v, want %v", origin, got, want)
		}
	}
	if got, want := o.HTTP(), []string{"http://127.0.0.1:8080", "https://n2.example.com"}; !slices.Equal(got, want) {
		t.Errorf("HTTP() = %v, want %v", got, want)
	}
	if got, want := o.Sources(), []string{"http://127.0.0.1:8080", "https://n2.example.com", "ws://127.0.0.1:8080", "wss://n2.example.com"}; !slices.Equal(got, want) {
		t.Errorf("Sources() = %v, want %v", got, want)
	}

	// n2 does not answer (no URLs): it keeps its origins, a page must be
	// allowed back to it; n1 left the configuration: its origins go.
	o.update([]NodeView{{NodeInfo: NodeInfo{Name: "n2"}}})
	if !o.Allowed("https://n2.example.com") || o.Allowed("http://127.0.0.1:8080") {
		t.Errorf("after n1 left and n2 went quiet: %v", o.Sources())
	}
	var nilOrigins *Origins
	if nilOrigins.Allowed("https://n2.example.com") {
		t.Error("a nil set allows")
	}
}
