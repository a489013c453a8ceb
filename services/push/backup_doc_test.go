package push

import (
	"os"
	"strings"
	"testing"
)

// TestBackupDocSaysItHoldsTheVAPIDKey: the cluster's Web Push key pair,
// private key included, is replicated state (r/push/vapid), so every
// backup (the whole replicated state) holds it, with the devices' push
// tokens and Web Push subscriptions. docs/operations.md's Backups said
// only that the nodes' signing keys are not in a backup: an operator
// had no word that a backup is a secret to keep like a data directory
// (whoever holds one can sign Web Push for the cluster).
func TestBackupDocSaysItHoldsTheVAPIDKey(t *testing.T) {
	if !strings.HasPrefix(keyVAPID, "r/") {
		t.Skipf("%s is not replicated state any more", keyVAPID)
	}
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Backups\n")
	if !ok {
		t.Fatal("docs/operations.md has no Backups section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	for _, want := range []string{"VAPID", keyVAPID} {
		if !strings.Contains(sec, want) {
			t.Errorf("docs/operations.md's Backups section does not say that a backup holds the Web Push private key (%q)", want)
		}
	}
}
