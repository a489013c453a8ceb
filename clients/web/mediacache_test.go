package web_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// The page's cache of media blob: URLs keeps the most recently used
// ones: beyond its bound it drops (and revokes) the least recently used
// one, but never one the page still shows, and clearing it (sign-out)
// revokes all (a page open for days would otherwise hold every picture
// it showed).
func TestMediaCacheRevokesWhatItDrops(t *testing.T) {
	n := nodetest.StartNode(t)
	page := browser(t)
	run(t, page, "the app's page", chromedp.Navigate(n.HTTPURL+"/"), chromedp.WaitVisible(chromedp.CSS(`#username`)))
	got := value(t, page, "exercise the cache", chromedp.Evaluate[map[string]any](`(async () => {
		const src = document.querySelector('script[type="module"]').src.replace(/app\.js$/, 'media.js');
		const { MediaCache } = await import(src);
		const revoked = [];
		const revoke = URL.revokeObjectURL;
		URL.revokeObjectURL = (u) => { revoked.push(u); revoke(u); };
		window.fetch = async () => new Response(new Blob(['0123456789']));
		const c = new MediaCache({ base: '', token: 't', refresh: async () => {} }, { max: 3 });
		const u0 = await c.get('/media/0'), u1 = await c.get('/media/1'), u2 = await c.get('/media/2');
		c.now('/media/0'); // used again: 1 is now the least recently used
		const shown = document.body.appendChild(Object.assign(document.createElement('img'), { src: u1 }));
		await c.get('/media/3'); // 1 is shown: 2 goes
		const afterFour = revoked.slice();
		shown.remove();
		await c.get('/media/4'); // 1 goes
		const afterFive = revoked.slice();
		const again = await c.get('/media/0');
		c.clear();
		return { afterFour: afterFour.map((u) => [u0, u1, u2].indexOf(u)), afterFive: afterFive.map((u) => [u0, u1, u2].indexOf(u)),
			kept: again === u0, cleared: revoked.length };
	})()`, chromedp.EvalAwaitPromise))
	t.Logf("%v", got)
	want := map[string]string{"afterFour": "[2]", "afterFive": "[2 1]", "kept": "true", "cleared": "5"}
	for k, w := range want {
		if s := fmtValue(got[k]); s != w {
			t.Errorf("%s: %s, want %s (all: %v)", k, s, w, got)
		}
	}
}

func fmtValue(v any) string {
	switch x := v.(type) {
	case []any:
		s := "["
		for i, e := range x {
			if i > 0 {
				s += " "
			}
			s += fmtValue(e)
		}
		return s + "]"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}
