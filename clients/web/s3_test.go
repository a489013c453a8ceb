package web_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// With an S3 store (deploy/compose.yaml's MinIO) GET /media/{id} is a
// redirect to a presigned URL of the store: the page's policy allows
// fetching from the store's origin, so a picture loads (its sender sees
// it sharp, not only the blurred placeholder).
func TestPicturesLoadFromAnS3Store(t *testing.T) {
	m := storetest.StartMinIO(t)
	sc := m.Config("web")
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.MediaStore = node.MediaStoreS3
		c.S3Endpoint, c.S3AccessKey, c.S3SecretKey = sc.Endpoint, sc.AccessKey, sc.SecretKey
		c.S3RawBucket, c.S3ProcessedBucket, c.S3ColdBucket = sc.RawBucket, sc.ProcessedBucket, sc.ColdBucket
	}))
	alice, bob := browser(t), browser(t)
	register(t, alice, n.HTTPURL, "alice")
	register(t, bob, n.HTTPURL, "bob")
	path := writePNG(t, "pic.png")
	run(t, alice, "alice sends bob a picture",
		chromedp.Evaluate[chromedp.Void](`window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI))`),
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#attach`), []string{path}),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id] img.thumb`)),
	)
	err := waitUntil(10*time.Second, 100*time.Millisecond, func() error {
		if eval[bool](t, alice, `!!document.querySelector('.msg.mine[data-id] img.thumb:not(.blurred)')`) {
			return nil
		}
		return fmt.Errorf("still blurred")
	})
	if err != nil {
		t.Fatalf("the picture never loads: CSP violations %q", eval[[]string](t, alice, `window.__csp`))
	}
	run(t, bob, "bob sees it too",
		click(`[data-conv="d:alice"]`),
		poll(`!!document.querySelector('.msg[data-id] img.thumb:not(.blurred)')`),
	)
}
