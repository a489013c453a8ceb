package web_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A file the server refuses (a script) shows "not sent" with the
// reason, and the user can take it out of the conversation: it stayed
// there, with no button at all, for the page's life.
func TestARefusedFileCanBeRemoved(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nrm -rf ~\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice sends bob a script",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#attach`), []string{path}),
		poll(`(document.querySelector('.msg[data-cid][data-state="failed"]') || {textContent: ''}).textContent.includes('refused')`),
	)
	if k := eval[int](t, alice, `document.querySelectorAll('.msg[data-cid][data-state="failed"] button.remove').length`); k != 1 {
		t.Fatalf("the refused file shows %d Remove buttons, want 1: %q", k, textOf(t, alice, `.msg[data-cid]`))
	}
	run(t, alice, "alice removes it",
		click(`.msg[data-cid] button.remove`),
		poll(`document.querySelectorAll('.msg[data-cid]').length === 0`),
	)
	run(t, alice, "and writes on", chromedp.SendKeys(chromedp.CSS(`#composer`), "sorry\n"), poll(shows("sorry", true)))
	if k := eval[int](t, alice, `document.querySelectorAll('.msg').length`); k != 1 {
		t.Fatalf("alice's chat shows %d messages, want 1", k)
	}
}
