package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// chromium finds the browser: $EDGECHAT_CHROMIUM or chromium on PATH.
// Without one the browser tests skip, except in CI (.ci/run installs it).
func chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("EDGECHAT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH")
	return ""
}

// browser starts a headless Chromium of its own (its own profile, so its
// own cookies: one user per browser).
func browser(t testing.TB, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(append(chromedp.DefaultExecAllocatorOptions[:], extra...),
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // tests run as root in CI
		// A page navigated away from is gone, connections closed, as a
		// closed tab's (the back-forward cache would keep it alive).
		chromedp.Flag("disable-features", "BackForwardCache"),
		chromedp.WindowSize(1100, 800),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run performs actions with a deadline; a failure names the step.
func run(t testing.TB, ctx context.Context, step string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	defer func() { t.Logf("%s: %v", step, time.Since(start).Round(time.Millisecond)) }()
	if err := chromedp.Do(sctx, actions...); err != nil {
		// What the page showed, to tell why.
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		page, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.getElementById('app').innerText`))
		t.Fatalf("%s: %v\nthe page showed:\n%s", step, err, page)
	}
}

// value runs one action that gives a value.
func value[T any](t testing.TB, ctx context.Context, step string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	return v
}

func register(t *testing.T, ctx context.Context, base, user string) {
	t.Helper()
	run(t, ctx, user+": open the app and create an account",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.SendKeys(chromedp.CSS(`#username`), user),
		chromedp.SendKeys(chromedp.CSS(`#password`), "password-"+user),
		click(`#register`),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
}

// shot saves a screenshot of the page as NAME.png into the directory
// $EDGECHAT_SCREENSHOTS names (docs/screenshots: `make web-screenshots`);
// without it, nothing.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("EDGECHAT_SCREENSHOTS")
	if dir == "" {
		return
	}
	png := value(t, ctx, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// darkTheme makes the page see prefers-color-scheme: dark.
func darkTheme() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
		return err
	})
}

// textOf reads the text of the first element matching sel.
// (in one evaluation: the app re-renders lists, so a node found first
// and read later may be gone).
func textOf(t testing.TB, ctx context.Context, sel string) string {
	t.Helper()
	q, err := json.Marshal(sel)
	if err != nil {
		t.Fatal(err)
	}
	return eval[string](t, ctx, `(document.querySelector(`+string(q)+`) || {textContent: ''}).textContent`)
}

func eval[T any](t testing.TB, ctx context.Context, js string) T {
	t.Helper()
	return value(t, ctx, "evaluate "+js, chromedp.Evaluate[T](js))
}

// Two people in two real browsers against a real node: sign up, start a
// direct chat, exchange messages in real time (the unread badge counts
// what arrives while the chat is closed); a body full of HTML and script
// is shown as text and runs nothing; a reload keeps the session (the
// HttpOnly cookie) and the history; signing out ends the session for
// good.
func TestTwoBrowsersChat(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob := browser(t), browser(t)
	register(t, alice, n.HTTPURL, "alice")
	register(t, bob, n.HTTPURL, "bob")

	const hostile = `<img src=x onerror="window.__xss=1">hello <b>bob</b> <script>window.__xss=2</script>`
	run(t, alice, "alice opens a chat with bob and sends",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), hostile+"\n"),
		// The pending copy is replaced by the stored one, which has an ID.
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	if got := textOf(t, alice, `.msg.mine[data-id]`); !strings.Contains(got, hostile) {
		t.Fatalf("alice's message shows %q", got)
	}

	run(t, bob, "bob sees the new conversation with one unread",
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:alice"] .badge`)),
	)
	if got := textOf(t, bob, `[data-conv="d:alice"] .badge`); got != "1" {
		t.Fatalf("bob's unread badge: %q", got)
	}
	run(t, bob, "bob opens it",
		click(`[data-conv="d:alice"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id]`)),
	)
	if got := textOf(t, bob, `.msg[data-id]`); !strings.Contains(got, hostile) {
		t.Fatalf("bob sees %q", got)
	}
	if imgs := eval[int](t, bob, `document.querySelectorAll('.messages img, .messages script, .messages b').length`); imgs != 0 {
		t.Fatalf("the message body became %d elements", imgs)
	}
	if xss := eval[bool](t, bob, `window.__xss !== undefined`); xss {
		t.Fatal("script from a message body ran")
	}

	// While alice's tab is hidden, a message shows a desktop notification
	// (the Notification API is stubbed in the page to see the call).
	run(t, alice, "alice's tab goes to the background",
		chromedp.Evaluate[chromedp.Void](`window.__notes = [];
			window.Notification = class { constructor(title, o) { window.__notes.push(title + ': ' + o.body); } static get permission() { return 'granted'; } close() {} };
			Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });`))
	run(t, bob, "bob replies",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hi alice, see https://example.com/x?a=1\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	run(t, alice, "alice gets the reply live",
		chromedp.WaitVisible(chromedp.CSS(`.msg:not(.mine)[data-id]`)),
	)
	if got := textOf(t, alice, `.msg:not(.mine)[data-id]`); !strings.Contains(got, "hi alice") {
		t.Fatalf("alice sees %q", got)
	}
	if notes := eval[[]string](t, alice, `window.__notes`); len(notes) != 1 || !strings.HasPrefix(notes[0], "bob: hi alice") {
		t.Fatalf("desktop notifications: %q", notes)
	}
	if href := eval[string](t, alice, `document.querySelector('.msg:not(.mine) a').href + ' ' + document.querySelector('.msg:not(.mine) a').rel`); href != "https://example.com/x?a=1 noopener noreferrer" {
		t.Fatalf("the link: %q", href)
	}

	// A reload resumes the session from the cookie: no sign-in form, and
	// the conversation's history is there, once each.
	run(t, bob, "bob reloads",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		click(`[data-conv="d:alice"]`),
		// The list's last message shows at once; the page of history follows.
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('.msg[data-id]').length >= 2`, chromedp.WithPollingInterval(20*time.Millisecond)),
	)
	if k := eval[int](t, bob, `document.querySelectorAll('.msg[data-id]').length`); k != 2 {
		t.Fatalf("after the reload bob's history shows %d messages, want 2", k)
	}
	if readable := eval[string](t, bob, `document.cookie`); readable != "" {
		t.Fatalf("the page can read cookies: %q", readable)
	}

	run(t, bob, "bob signs out, and a reload does not bring the session back",
		click(`#sign-out`),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
	)
}

// Groups, typing, receipts and presence between three browsers: alice
// creates a group with bob and carol, who see it appear and chat in it;
// bob's typing shows on alice's side; alice's direct message goes sent →
// read when bob opens it; bob closing his browser shows him offline to
// alice. Every control of the page has an accessible name.
func TestGroupsTypingReceiptsPresence(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob, carol := browser(t), browser(t), browser(t)
	for user, ctx := range map[string]context.Context{"alice": alice, "bob": bob, "carol": carol} {
		register(t, ctx, n.HTTPURL, user)
	}
	if unnamed := eval[[]string](t, alice, accessibleNames); len(unnamed) != 0 {
		t.Fatalf("controls without an accessible name: %q", unnamed)
	}

	// A direct message: sent, then read once bob opens it.
	run(t, alice, "alice writes to bob",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "are you there?\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	run(t, bob, "bob opens the chat",
		click(`[data-conv="d:alice"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id]`)),
	)
	run(t, alice, "alice sees it read and bob online",
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-state="read"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:bob"] .dot[data-presence="online"]`)),
	)
	// Still read after a reload (the conversation list says how far bob
	// read), not only while the live receipt is in the page's memory.
	run(t, alice, "alice reloads and still sees it read",
		chromedp.Reload(),
		click(`[data-conv="d:bob"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-state="read"]`)),
	)

	// Typing travels, and is not stored.
	run(t, bob, "bob types", chromedp.SendKeys(chromedp.CSS(`#composer`), "typing some"))
	run(t, alice, "alice sees bob typing", chromedp.Poll[chromedp.Void](`document.querySelector('.conversation .sub').textContent === 'bob is typing…'`, chromedp.WithPollingInterval(50*time.Millisecond)))

	// A group of three.
	run(t, alice, "alice creates a group",
		click(`.newgroup summary`),
		chromedp.SendKeys(chromedp.CSS(`#group-name`), "Team <i>x</i>"),
		chromedp.SendKeys(chromedp.CSS(`#group-members`), "bob, carol"),
		click(`#create-group`),
		chromedp.Poll[chromedp.Void](`document.getElementById('conv-title').textContent === 'Team <i>x</i>'`, chromedp.WithPollingInterval(50*time.Millisecond)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hello team\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	for user, ctx := range map[string]context.Context{"bob": bob, "carol": carol} {
		run(t, ctx, user+" sees the group and its message",
			chromedp.WaitVisible(chromedp.CSS(`[data-conv^="g:"] .badge`)),
			click(`[data-conv^="g:"]`),
			// The direct chat's messages stay until the group's replace them.
			chromedp.Poll[chromedp.Void](`document.getElementById('conv-title').textContent === 'Team <i>x</i>'`, chromedp.WithPollingInterval(50*time.Millisecond)),
			chromedp.WaitVisible(chromedp.CSS(`.msg[data-id]`)),
		)
		if from, got := textOf(t, ctx, `.msg[data-id] .from`), textOf(t, ctx, `.msg[data-id] .text`); from != "alice" || got != "hello team" {
			t.Fatalf("%s sees %q from %q", user, got, from)
		}
	}
	run(t, carol, "carol answers in the group", chromedp.SendKeys(chromedp.CSS(`#composer`), "hi from carol\n"))
	for user, ctx := range map[string]context.Context{"alice": alice, "bob": bob} {
		run(t, ctx, user+" gets carol's group message",
			chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('.msg[data-id]')].some(e => e.querySelector('.from')?.textContent === 'carol' && e.querySelector('.text')?.textContent === 'hi from carol')`, chromedp.WithPollingInterval(50*time.Millisecond)))
	}
	shot(t, alice, "group")
	if unnamed := eval[[]string](t, bob, accessibleNames); len(unnamed) != 0 {
		t.Fatalf("controls without an accessible name: %q", unnamed)
	}

	// bob goes away: alice sees him offline after the grace period.
	run(t, alice, "alice opens the chat with bob", click(`[data-conv="d:bob"]`))
	chromedp.Cancel(bob)
	run(t, alice, "alice sees bob offline",
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:bob"] .dot[data-presence="offline"]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('.conversation .sub').textContent.startsWith('last seen')`, chromedp.WithPollingInterval(50*time.Millisecond)),
	)
}

// accessibleNames lists the page's visible controls that have no
// accessible name (no label, aria-label, aria-labelledby or text).
const accessibleNames = `[...document.querySelectorAll('button, input, textarea, select, a[href], summary')]
  .filter(e => e.offsetParent !== null || e.tagName === 'SUMMARY')
  .filter(e => {
    if ((e.getAttribute('aria-label') || '').trim()) return false;
    const by = e.getAttribute('aria-labelledby');
    if (by && by.split(' ').some(id => (document.getElementById(id)?.textContent || '').trim())) return false;
    if (e.labels && [...e.labels].some(l => l.textContent.trim())) return false;
    return !(e.textContent || '').trim();
  })
  .map(e => e.outerHTML.slice(0, 80))`

// An image through the page: alice attaches it (a file name full of
// HTML), the upload shows its progress, the server processes it, and bob
// sees a blurred placeholder become the preview, opens the full image in
// the viewer, and reads the name as text.
// writePNG writes a 64×48 PNG named name into a temporary directory.
func writePNG(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestImageMessage(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob := browser(t), browser(t)
	run(t, alice, "the sign-in page", chromedp.Navigate(n.HTTPURL+"/"), chromedp.WaitVisible(chromedp.CSS(`#username`)))
	shot(t, alice, "signin")
	register(t, alice, n.HTTPURL, "alice")
	register(t, bob, n.HTTPURL, "bob")

	name := `<img src=x onerror="window.__xss=1">.png`
	path := writePNG(t, name)

	run(t, alice, "alice sends bob a picture",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "the view"),
		// Watch for the progress bar before it can be gone.
		chromedp.Evaluate[chromedp.Void](`window.__sawProgress = false; new MutationObserver(() => {
			if (document.querySelector('progress.upload')) window.__sawProgress = true;
		}).observe(document.body, {subtree: true, childList: true})`),
		chromedp.SetUploadFiles(chromedp.CSS(`#attach`), []string{path}),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id] img.thumb:not(.blurred)`)),
	)
	if !eval[bool](t, alice, `window.__sawProgress`) {
		t.Fatal("no upload progress bar was shown")
	}
	run(t, bob, "bob opens the chat and sees the picture",
		click(`[data-conv="d:alice"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id] img.thumb:not(.blurred)`)),
	)
	if src := eval[string](t, bob, `document.querySelector('.msg[data-id] img.thumb').src`); !strings.HasPrefix(src, "blob:") {
		t.Fatalf("the preview's src is %q, want a blob: URL", src)
	}
	if alt := eval[string](t, bob, `document.querySelector('.msg[data-id] img.thumb').alt`); alt != name {
		t.Fatalf("alt = %q", alt)
	}
	if got := textOf(t, bob, `.msg[data-id] .text`); got != "the view" {
		t.Fatalf("caption %q", got)
	}
	run(t, bob, "bob opens the viewer",
		click(`.thumbbtn`),
		chromedp.WaitVisible(chromedp.CSS(`dialog.viewer img`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('dialog.viewer img').naturalWidth === 64`, chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	shot(t, bob, "image-viewer")
	run(t, bob, "bob closes the viewer", click(`dialog.viewer .close`))
	run(t, bob, "bob answers", chromedp.SendKeys(chromedp.CSS(`#composer`), "lovely! https://example.com/map\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)))
	shot(t, bob, "direct-image")
	run(t, bob, "dark theme", darkTheme())
	shot(t, bob, "dark")
	run(t, bob, "phone width", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1)))
	shot(t, bob, "phone-conversation")
	if k := eval[int](t, bob, `document.querySelectorAll('.messages img:not(.thumb)').length`); k != 0 || eval[bool](t, bob, `window.__xss !== undefined`) {
		t.Fatal("the file name was parsed as HTML")
	}
}

// switchProxy stands in for the load balancer in front of a cluster:
// every request (WebSocket upgrades included) goes to the current
// backend; with none it answers 502, as a balancer with no healthy node.
type switchProxy struct {
	mu      sync.Mutex
	backend *httputil.ReverseProxy
}

func (p *switchProxy) to(rawURL string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rawURL == "" {
		p.backend = nil
		return
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(err)
	}
	p.backend = httputil.NewSingleHostReverseProxy(u)
}

func (p *switchProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	b := p.backend
	p.mu.Unlock()
	if b == nil {
		http.Error(w, "no healthy backend", http.StatusBadGateway)
		return
	}
	b.ServeHTTP(w, r)
}

// The page's node goes away: the page shows it is offline, reconnects by
// itself once the balancer sends it to another node of the cluster, and
// catches up: what bob sent meanwhile appears once, and what alice wrote
// while offline is delivered once.
func TestReconnectWhenTheNodeGoesAway(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	lb := &switchProxy{}
	lb.to(nodes[0].HTTPURL)
	front := httptest.NewServer(lb)
	t.Cleanup(front.Close)
	// For a while no node answers through the balancer, then the next.
	reconnectScenario(t, nodes, front.URL, func() { lb.to("") }, func() { lb.to(nodes[1].HTTPURL) })
}

// click clicks the element sel names once it is there, in one
// evaluation: the app re-renders lists, so a node found first and clicked
// later may be gone (chromedp.Click: "Could not find node").
func click(sel string) chromedp.Action[chromedp.Void] {
	q, err := json.Marshal(sel)
	if err != nil {
		panic(err)
	}
	return chromedp.Poll[chromedp.Void](`(() => { const e = document.querySelector(`+string(q)+`); if (!e) return false; e.click(); return true; })()`,
		chromedp.WithPollingInterval(20*time.Millisecond))
}

// postMessage sends a message as the owner of tok through the node's
// HTTP API (POST /chat/messages); nil once it is stored (201).
func postMessage(base, tok, body string) error {
	req, err := http.NewRequest(http.MethodPost, base+"/chat/messages", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST /chat/messages: %s", res.Status)
	}
	return nil
}

// signIn signs an existing account in through the form.
func signIn(t testing.TB, ctx context.Context, base, user string) {
	t.Helper()
	run(t, ctx, user+": sign in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.SendKeys(chromedp.CSS(`#username`), user),
		chromedp.SendKeys(chromedp.CSS(`#password`), nodetest.Password(user)+"\n"),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
}

// Search finds people, history loads as the reader scrolls back (every
// message once, in order), and a reply carries replyTo and quotes what
// it answers.
func TestSearchScrollBackAndReply(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	const total = 130
	for i := 1; i <= total; i++ {
		body := fmt.Sprintf(`{"to":"alice","cid":"seed-%d","type":"text","body":"m%03d"}`, i, i)
		if err := postMessage(n.HTTPURL, bobTok, body); err != nil {
			t.Fatalf("seeding message %d: %v", i, err)
		}
	}

	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice searches for bob",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bo"),
		chromedp.Poll[chromedp.Void](`document.querySelector('#people option[value="bob"]') !== null`, chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	run(t, alice, "alice opens the chat and scrolls back to the start",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "b\n"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('.msg[data-id]').length >= 50`, chromedp.WithPollingInterval(50*time.Millisecond)),
		chromedp.Poll[chromedp.Void](`(() => { const el = document.querySelector('.messages'); el.scrollTop = 0; el.dispatchEvent(new Event('scroll'));
			return [...document.querySelectorAll('.msg[data-id] .text')].some(e => e.textContent === 'm001'); })()`,
			chromedp.WithPollingInterval(100*time.Millisecond)),
	)
	texts := eval[[]string](t, alice, `[...document.querySelectorAll('.msg[data-id] .text')].map(e => e.textContent)`)
	if len(texts) != total {
		t.Fatalf("after scrolling back alice's page shows %d messages, want %d", len(texts), total)
	}
	for i, s := range texts {
		if want := fmt.Sprintf("m%03d", i+1); s != want {
			t.Fatalf("message %d is %q, want %q (order or duplicates)", i, s, want)
		}
	}

	run(t, alice, "alice replies to the newest",
		click(`.msg[data-id]:last-of-type .reply`),
		chromedp.WaitVisible(chromedp.CSS(`.replying`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "answer\n"),
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('.msg.mine[data-id]')].some(e => e.querySelector('.quote')?.textContent === 'bob m130')`,
			chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	// The stored envelope says what it answers.
	req, _ := http.NewRequest(http.MethodGet, n.HTTPURL+"/chat/history?with=alice&limit=2", nil)
	req.Header.Set("Authorization", "Bearer "+bobTok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var page struct {
		Messages []struct{ ID, Body, ReplyTo string }
	}
	if err := json.NewDecoder(res.Body).Decode(&page); err != nil || len(page.Messages) != 2 {
		t.Fatalf("history: %v %+v", err, page)
	}
	if m := page.Messages[0]; m.Body != "answer" || m.ReplyTo != page.Messages[1].ID || page.Messages[1].Body != "m130" {
		t.Fatalf("the reply as stored: %+v", page.Messages)
	}
}

// With no conversation open the composer's controls are disabled (there
// is nowhere to send to: a press of Send, Attach or Voice did nothing
// and said nothing); opening one enables them.
func TestComposerWaitsForAConversation(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	const state = `[...document.querySelectorAll('.composer textarea, .composer input, .composer button')].map((e) => e.id + ':' + e.disabled).join(' ')`
	if got := eval[string](t, alice, state); strings.Contains(got, ":false") {
		t.Fatalf("composer controls with no conversation open: %s", got)
	}
	if got := eval[string](t, alice, `document.querySelector('#composer').placeholder`); got != "Pick a conversation to write" {
		t.Fatalf("placeholder %q", got)
	}
	run(t, alice, "alice opens a chat with bob",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
	)
	if got := eval[string](t, alice, state); strings.Contains(got, ":true") {
		t.Fatalf("composer controls with a conversation open: %s", got)
	}
	run(t, alice, "and can write",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "now it works\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
}
