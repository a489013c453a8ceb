package web_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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
	// Sending it again would be refused again: no Retry.
	if k := eval[int](t, alice, `document.querySelectorAll('.msg[data-cid] button.retry').length`); k != 0 {
		t.Fatalf("the refused file offers %d Retry buttons, want none", k)
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

// An upload the network broke (the phone went through a tunnel) shows
// "not sent" with Retry, which uploads the file again and sends it: the
// user had to find the file and pick it again, and the caption was lost.
func TestAFileTheNetworkLostCanBeSentAgain(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice's first upload meets a network error",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		// The page's next upload fails as XMLHttpRequest reports a
		// network error; the uploads after it go through.
		chromedp.Evaluate[chromedp.Void](`(() => {
			const send = XMLHttpRequest.prototype.send;
			window.__uploads = 0;
			XMLHttpRequest.prototype.send = function (body) {
				if (window.__uploads++ === 0) { setTimeout(() => this.onerror(new ProgressEvent('error')), 0); return; }
				return send.call(this, body);
			};
		})()`),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "the beach"),
		chromedp.SetUploadFiles(chromedp.CSS(`#attach`), []string{writePNG(t, "beach.png")}),
		poll(`!!document.querySelector('.msg[data-cid][data-state="failed"]')`),
	)
	if k := eval[int](t, alice, `document.querySelectorAll('.msg[data-cid][data-state="failed"] button.retry').length`); k != 1 {
		t.Fatalf("the lost upload shows %d Retry buttons, want 1: %q", k, textOf(t, alice, `.msg[data-cid]`))
	}
	run(t, alice, "alice retries: the picture is sent with its caption",
		click(`.msg[data-cid] button.retry`),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id] img.thumb:not(.blurred)`)),
		poll(`document.querySelectorAll('.msg[data-cid]').length === 0`),
	)
	if got := textOf(t, alice, `.msg.mine[data-id] .text`); got != "the beach" {
		t.Fatalf("caption %q, want %q", got, "the beach")
	}
	if k := eval[int](t, alice, `window.__uploads`); k != 2 {
		t.Fatalf("%d uploads, want 2 (the lost one and the retry)", k)
	}
}

// An upload the server stored whose answer the network lost shows "not
// sent" with Retry; the Retry must not store the file a second time
// (processed again, counted twice against the daily quota): the page
// sends the upload again under the same Idempotency-Key, and the server
// answers the first upload.
func TestRetryOfAFileWhoseAnswerWasLostIsOneUpload(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice's first upload reaches the server, its answer does not reach her",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		// Every upload goes through; the page hears a network error for
		// the first one, and the test keeps what the server answered.
		chromedp.Evaluate[chromedp.Void](`(() => {
			const send = XMLHttpRequest.prototype.send;
			window.__uploads = 0;
			window.__answers = [];
			XMLHttpRequest.prototype.send = function (body) {
				const first = window.__uploads++ === 0;
				const onload = this.onload, onerror = this.onerror;
				this.onload = () => {
					window.__answers.push(this.status + ' ' + this.responseText);
					if (first) onerror(new ProgressEvent('error')); else onload();
				};
				return send.call(this, body);
			};
		})()`),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "the beach"),
		chromedp.SetUploadFiles(chromedp.CSS(`#attach`), []string{writePNG(t, "beach.png")}),
		poll(`!!document.querySelector('.msg[data-cid][data-state="failed"]')`),
	)
	run(t, alice, "alice retries: the picture is sent with its caption",
		click(`.msg[data-cid] button.retry`),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id] img.thumb:not(.blurred)`)),
		poll(`document.querySelectorAll('.msg[data-cid]').length === 0`),
	)
	answers := eval[[]string](t, alice, `window.__answers`)
	if len(answers) != 2 {
		t.Fatalf("answers %q, want 2", answers)
	}
	id := func(a string) string {
		var v struct {
			MediaID string `json:"mediaId"`
		}
		_, body, _ := strings.Cut(a, " ")
		_ = json.Unmarshal([]byte(body), &v)
		return v.MediaID
	}
	if id(answers[0]) == "" || id(answers[0]) != id(answers[1]) {
		t.Fatalf("the upload and its retry were answered %q: two uploads of one file", answers)
	}
}
