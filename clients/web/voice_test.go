package web_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A voice note: alice records about a second from the (fake) microphone
// and sends it; the server reads it as audio with a duration, and bob
// plays it in place.
func TestVoiceNote(t *testing.T) {
	n := nodetest.StartNode(t)
	mic := []chromedp.ExecAllocatorOption{
		chromedp.Flag("use-fake-ui-for-media-stream", true),     // no permission prompt
		chromedp.Flag("use-fake-device-for-media-stream", true), // a beeping fake microphone
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	}
	alice, bob := browser(t, mic...), browser(t, mic...)
	register(t, alice, n.HTTPURL, "alice")
	register(t, bob, n.HTTPURL, "bob")

	run(t, alice, "alice opens a chat with bob and starts recording",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		// The composer is on the page before the chat is open (the app
		// first looks bob up), and a press with no chat open records
		// nothing: wait for the chat's title.
		poll(`document.getElementById('conv-title').textContent.includes('bob')`),
		click(`#record[aria-pressed="false"]`),
		chromedp.WaitVisible(chromedp.CSS(`#record[aria-pressed="true"]`)),
	)
	if unnamed := eval[[]string](t, alice, accessibleNames); len(unnamed) != 0 {
		t.Fatalf("controls without an accessible name: %q", unnamed)
	}
	// About a second of sound: the button counts the recording's seconds.
	run(t, alice, "alice records for a second", poll(`Number(document.getElementById('record').dataset.seconds) >= 1`))
	run(t, alice, "alice stops, and the note is sent",
		click(`#record[aria-pressed="true"]`),
		chromedp.WaitVisible(chromedp.CSS(`#record[aria-pressed="false"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id] audio`)),
	)

	var hist struct {
		Messages []struct {
			Type  string
			Media struct {
				ID, Kind, Mime string
				DurationMs     int64
			}
		}
	}
	bobTok := n.Token(t, "bob")
	getJSON(t, n.HTTPURL, bobTok, "/chat/history?with=alice", &hist)
	if len(hist.Messages) != 1 || hist.Messages[0].Type != "media" {
		t.Fatalf("history: %+v", hist)
	}
	md := hist.Messages[0].Media
	var info struct {
		Kind, Mime, Status string
		DurationMs         int64
	}
	getJSON(t, n.HTTPURL, bobTok, "/media/"+md.ID+"/info", &info)
	t.Logf("the voice note: %+v, envelope %+v", info, md)
	if info.Kind != "audio" || info.Status != "ready" || !strings.HasPrefix(info.Mime, "audio/") || info.DurationMs < 500 || info.DurationMs > 5000 {
		t.Fatalf("media/info of the voice note: %+v", info)
	}
	if md.Kind != "audio" || md.DurationMs != info.DurationMs {
		t.Fatalf("the message's media: %+v", md)
	}

	run(t, bob, "bob opens the chat and plays the note in place",
		click(`[data-conv="d:alice"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id] audio[controls]`)),
		poll(`document.querySelector('.msg[data-id] audio').src.startsWith('blob:')`),
		chromedp.Evaluate[chromedp.Void](`(() => { const a = document.querySelector('.msg[data-id] audio'); a.muted = true; return a.play(); })()`, chromedp.EvalAwaitPromise),
		chromedp.Poll[chromedp.Void](`(() => { const a = document.querySelector('.msg[data-id] audio'); return !a.error && a.currentTime > 0.2; })()`,
			chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	if label := eval[string](t, bob, `document.querySelector('.msg[data-id] audio').getAttribute('aria-label')`); !strings.HasPrefix(label, "Voice note voice-note-") {
		t.Fatalf("the player's label: %q", label)
	}
}

// A voice note goes to the conversation it was recorded in: alice
// starts recording for bob, looks at carol's chat meanwhile and stops
// there; the note went to carol.
func TestAVoiceNoteGoesWhereItWasRecorded(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	alice := browser(t,
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true))
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice starts recording for bob",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		poll(`document.getElementById('conv-title').textContent === 'bob'`),
		click(`#record[aria-pressed="false"]`),
		chromedp.WaitVisible(chromedp.CSS(`#record[aria-pressed="true"]`)),
	)
	run(t, alice, "she looks at carol's chat, records on, and stops there",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "carol\n"),
		poll(`document.getElementById('conv-title').textContent === 'carol'`),
		poll(`Number(document.getElementById('record').dataset.seconds) >= 1`),
		click(`#record[aria-pressed="true"]`),
		chromedp.WaitVisible(chromedp.CSS(`#record[aria-pressed="false"]`)),
	)
	run(t, alice, "the note is sent", poll(`document.querySelectorAll('.msg[data-cid]').length === 0 && !![...document.querySelectorAll('.convs .conv-last')].find((e) => e.textContent === 'media')`))
	var bob, carol struct {
		Messages []struct{ From, To, Type string }
	}
	tok := n.Token(t, "alice")
	getJSON(t, n.HTTPURL, tok, "/chat/history?with=bob", &bob)
	getJSON(t, n.HTTPURL, tok, "/chat/history?with=carol", &carol)
	if len(bob.Messages) != 1 || len(carol.Messages) != 0 {
		t.Fatalf("the voice note recorded for bob: bob has %+v, carol %+v", bob.Messages, carol.Messages)
	}
}

// Signing out while recording turns the microphone off: it stayed on
// (and recording) on the sign-in screen until the tab was closed.
func TestSigningOutStopsTheMicrophone(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t,
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true))
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice starts recording for bob",
		// Keep the streams the page asks for, to see them end.
		chromedp.Evaluate[chromedp.Void](`window.__streams = []; const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
			navigator.mediaDevices.getUserMedia = async (c) => { const s = await gum(c); window.__streams.push(s); return s; }; undefined`),
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		poll(`document.getElementById('conv-title').textContent === 'bob'`),
		click(`#record[aria-pressed="false"]`),
		chromedp.WaitVisible(chromedp.CSS(`#record[aria-pressed="true"]`)),
	)
	run(t, alice, "and signs out", click(`#sign-out`), chromedp.WaitVisible(chromedp.CSS(`#username`)))
	if live := eval[int](t, alice, `window.__streams.flatMap((s) => s.getTracks()).filter((tr) => tr.readyState === 'live').length`); live != 0 {
		t.Fatalf("after signing out, %d microphone tracks are still live", live)
	}
}
