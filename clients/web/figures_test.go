package web_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// The web client's figures (issue 13), in a real Chromium against a real
// node; run once:
//
//	go test -run '^$' -bench WebFigures -benchtime 1x ./clients/web/
//
// list-ms: from navigating to the page (signed in by its cookie) to the
// conversation list of a user with 1,000 conversations drawn;
// heap-MB: the tab's JS heap after scrolling back through 10,000
// messages of one conversation (scroll-ms: how long that took).
func BenchmarkWebFigures(b *testing.B) {
	n := nodetest.StartNode(b)
	n.NewUser(b, "alice")
	post := func(tok, body string) error { return postMessage(n.HTTPURL, tok, body) }
	parallel := func(total int, fn func(i int) error) {
		var wg sync.WaitGroup
		errs := make(chan error, total)
		next := make(chan int)
		for range 8 {
			wg.Go(func() {
				for i := range next {
					if err := fn(i); err != nil {
						errs <- err
					}
				}
			})
		}
		for i := range total {
			next <- i
		}
		close(next)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	// 1,000 conversations, one message each; then 10,000 in one of them.
	parallel(1000, func(i int) error {
		u := fmt.Sprintf("peer%04d", i)
		tok := n.NewUser(b, u)
		return post(tok, fmt.Sprintf(`{"to":"alice","cid":"c%d","type":"text","body":"hello from %s"}`, i, u))
	})
	bobTok := n.NewUser(b, "bob")
	parallel(10000, func(i int) error {
		return post(bobTok, fmt.Sprintf(`{"to":"alice","cid":"m%d","type":"text","body":"message number %d of a long conversation"}`, i, i))
	})

	ctx := browser(b)
	signIn(b, ctx, n.HTTPURL, "alice")
	b.ResetTimer()
	start := time.Now()
	run(b, ctx, "reload to the conversation list",
		chromedp.Navigate(n.HTTPURL+"/"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('.convs li').length >= 1000`, chromedp.WithPollingInterval(5*time.Millisecond)))
	list := time.Since(start)

	start = time.Now()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := chromedp.Do(sctx, click(`[data-conv="d:bob"]`),
		chromedp.Poll[chromedp.Void](`(() => { const el = document.querySelector('.messages'); el.scrollTop = 0; el.dispatchEvent(new Event('scroll'));
			return document.querySelectorAll('.msg[data-id]').length >= 10000; })()`,
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(0))); err != nil {
		b.Fatal(err)
	}
	scroll := time.Since(start)
	heap := eval[float64](b, ctx, `(performance.memory && performance.memory.usedJSHeapSize) || 0`)
	b.ReportMetric(float64(list.Milliseconds()), "list-ms")
	b.ReportMetric(float64(scroll.Milliseconds()), "scroll-ms")
	b.ReportMetric(heap/(1<<20), "heap-MB")
}
