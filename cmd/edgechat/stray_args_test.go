package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A word the command does not take (a second user name, "revoke" for
// --revoke, a node name after leave) is refused as a usage error, before
// anything is done. Go's flag parsing stops at the first word that is
// not a flag: the word and every flag after it were ignored, so
// `edgechat user suspend spam1 spam2` suspended spam1 only and said so,
// `user grant bob admin revoke` granted, and flags written after the
// word (--server, --data) silently fell back to their defaults, the
// node of ./data and :8080 rather than the one named.
func TestStrayArgumentsAreRefusedBeforeAnythingIsDone(t *testing.T) {
	n := nodetest.StartNode(t)
	admin := n.NewUser(t, "alice") // the first account is an admin
	n.NewUser(t, "bob")
	n.NewUser(t, "spam1")
	n.NewUser(t, "spam2")
	// The defaults name this node, as ./data and :8080 name the node of
	// an edge box.
	t.Setenv("EDGECHAT_SERVER", n.HTTPURL)
	t.Setenv("EDGECHAT_DATA", n.Config.DataDir)
	keysBefore := adminGet(t, n.HTTPURL+"/admin/keys", admin)

	for _, args := range [][]string{
		{"user", "suspend", "spam1", "spam2"},
		{"user", "grant", "bob", "admin", "revoke"},
		{"user", "delete", "spam1", "spam2", "--yes"},
		{"user", "list", "spam1"},
		{"keys", "rotate", "n1"},
		{"keys", "list", "--data", n.Config.DataDir, "all"},
		{"cluster", "leave", "n1"},
		{"cluster", "status", "n1"},
		{"user", "add", "carol", "dave", "--password-stdin"},
		{"user", "passwd", "bob", "spam1", "--password-stdin"},
		{"health", "--url", n.HTTPURL + "/readyz", "now"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, strings.NewReader("a new long password\n"), &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "unexpected arguments") {
			first, _, _ := strings.Cut(errOut.String(), "\n")
			t.Errorf("edgechat %s: exit %d, %q %q; want 2, unexpected arguments", strings.Join(args, " "), code, strings.TrimSpace(out.String()), first)
		}
	}

	var users struct {
		Users []struct {
			UserID    string `json:"userId"`
			Admin     bool   `json:"admin"`
			Suspended bool   `json:"suspended"`
		} `json:"users"`
	}
	if err := json.Unmarshal([]byte(adminGet(t, n.HTTPURL+"/admin/users", admin)), &users); err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, u := range users.Users {
		names = append(names, u.UserID)
		if u.Suspended || (u.Admin && u.UserID != "alice") {
			t.Errorf("%s changed by a refused command: %+v", u.UserID, u)
		}
	}
	if got := strings.Join(names, ","); got != "alice,bob,spam1,spam2" {
		t.Errorf("accounts after the refused commands: %s, want alice,bob,spam1,spam2", got)
	}
	if keysAfter := adminGet(t, n.HTTPURL+"/admin/keys", admin); keysAfter != keysBefore {
		t.Errorf("signing keys changed by a refused rotate:\nbefore %s\nafter  %s", keysBefore, keysAfter)
	}
	var loginOut struct{ AccessToken string }
	if code, _ := httpJSON("POST", n.HTTPURL+"/auth/login", "", map[string]string{"username": "bob", "password": "a new long password"}, &loginOut); code != http.StatusUnauthorized {
		t.Errorf("bob's password reset by a refused passwd: login with the new one answers %d, want 401", code)
	}
}

func adminGet(t *testing.T, url, token string) string {
	t.Helper()
	var raw json.RawMessage
	code, err := httpJSON("GET", url, token, nil, &raw)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, code, err)
	}
	return string(raw)
}

// An admin command run without the node's data directory (its signing
// key) says which flag names it, not only the file it could not open.
func TestAdminCommandWithoutTheDataDirNamesTheFlag(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	empty := t.TempDir()
	for _, args := range [][]string{
		{"user", "list", "--server", n.HTTPURL, "--data", empty},
		{"token", "alice", "--server", n.HTTPURL, "--data", empty},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, nil, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "--data") || !strings.Contains(errOut.String(), empty) {
			t.Errorf("edgechat %s: exit %d, %q; want 1 and a message naming --data and %s", strings.Join(args, " "), code, errOut.String(), empty)
		}
	}
}
