package node_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// BenchmarkMediaUpload: upload throughput through the gateway into the
// store (raw body, 10 MB files, 4 at a time, like a few phones sending
// videos). With S3, processing is off on this node (--roles without
// media) so that only the upload path is measured; the local store
// needs the media role (only the node holding a local upload processes
// it), so processing runs alongside there. MinIO runs on the same two
// cores as the node and the clients.
//
//	go test -run '^$' -bench BenchmarkMediaUpload -benchtime 3x ./node/
func BenchmarkMediaUpload(b *testing.B) {
	for _, kind := range []string{"local", "s3"} {
		b.Run(kind, func(b *testing.B) {
			opts := []nodetest.Option{nodetest.WithConfig(func(c *node.Config) {
				if kind == "s3" {
					c.Roles = []string{}
				}
				c.MediaQuotaCount, c.MediaQuotaBytes = 1_000_000, 1<<40
			})}
			if kind == "s3" {
				opts = append(opts, withMinIO(storetest.StartMinIO(b), "bench"))
			}
			n := nodetest.StartNode(b, opts...)
			tok := n.NewUser(b, "alice")
			const size, files, parallel = 10 << 20, 16, 4
			b.SetBytes(size * files)
			b.ResetTimer()
			for range b.N {
				work := make(chan int, files)
				for i := range files {
					work <- i
				}
				close(work)
				var wg sync.WaitGroup
				start := time.Now()
				for range parallel {
					wg.Go(func() {
						for i := range work {
							req, _ := http.NewRequest("POST", fmt.Sprintf("%s/media?name=f%d.bin", n.HTTPURL, i), io.LimitReader(zeroReader{}, size))
							req.ContentLength = size
							req.Header.Set("Authorization", "Bearer "+tok)
							req.Header.Set("Content-Type", "application/octet-stream")
							resp, err := http.DefaultClient.Do(req)
							if err != nil {
								b.Error(err)
								return
							}
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode != 202 {
								b.Errorf("upload: %d", resp.StatusCode)
							}
						}
					})
				}
				wg.Wait()
				_ = start
			}
		})
	}
}
