package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// BenchmarkArchiveTiers stores b.N direct messages (100-byte bodies of
// random words between 100 users in random pairs: ~4,950 conversations)
// on one node with the local archive store, then seals everything but
// each conversation's newest message, and reports disk per message
// before and after (Raft + Badger, and the segments), and history page
// latencies over HTTP (newest page of 50, one per conversation sampled):
// hot before sealing, sealed right after a restart (cold block cache)
// and sealed again (warm).
//
//	go test -run '^$' -bench BenchmarkArchiveTiers -benchtime 1000000x -timeout 60m ./node/
func BenchmarkArchiveTiers(b *testing.B) {
	const (
		users   = 100
		senders = 64
		bodyLen = 100
		sampled = 300 // conversations whose pages are timed
	)
	dir := b.TempDir()
	n := nodetest.StartNode(b, nodetest.WithDataDir(dir))
	ctx := context.Background()
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("user%03d", i)
		if _, err := n.Auth.CreateAccount(ctx, names[i], nodetest.Password(names[i]), names[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	storeRandomDirect(b, n, names, b.N, senders, bodyLen, 7, nil)
	b.StopTimer()
	settle := func() {
		if err := node.SettleStorage(ctx, n.Node); err != nil {
			b.Fatal(err)
		}
		if err := node.CompactStorage(n.Node); err != nil {
			b.Fatal(err)
		}
	}
	settle()
	hotDisk := diskUsage(b, filepath.Join(dir, "raft")) + diskUsage(b, filepath.Join(dir, "db"))

	// The pages timed: the newest page of sampled conversations, each read
	// by its first user.
	rng := rand.New(rand.NewPCG(1, 2))
	type pair struct{ a, b string }
	var pairs []pair
	tokens := map[string]string{}
	for len(pairs) < sampled {
		a, c := names[rng.IntN(users)], names[rng.IntN(users)]
		if a == c {
			continue
		}
		pairs = append(pairs, pair{a, c})
		if tokens[a] == "" {
			tokens[a] = n.Token(b, a)
		}
	}
	timePages := func() []time.Duration {
		var out []time.Duration
		for _, p := range pairs {
			start := time.Now()
			if code := api(b, n, tokens[p.a], "GET", "/chat/history?with="+p.b+"&limit=50", nil, nil); code != 200 {
				b.Fatalf("history: %d", code)
			}
			out = append(out, time.Since(start))
		}
		return out
	}
	hot := timePages()

	sealStart := time.Now()
	_, st, err := n.SweepArchive(ctx, time.Now().Add(31*24*time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	sealTook := time.Since(sealStart)
	settle()
	raftDB := diskUsage(b, filepath.Join(dir, "raft")) + diskUsage(b, filepath.Join(dir, "db"))
	segs := diskUsage(b, filepath.Join(dir, "archive"))

	if err := n.Stop(); err != nil {
		b.Fatal(err)
	}
	n = nodetest.StartNode(b, nodetest.WithDataDir(dir))
	cold := timePages()
	warm := timePages()

	per := func(v int64) float64 { return float64(v) / float64(b.N) }
	b.ReportMetric(per(hotDisk), "hot-B/msg")
	b.ReportMetric(per(raftDB), "sealed-local-B/msg")
	b.ReportMetric(per(segs), "segments-B/msg")
	b.ReportMetric(float64(st.Segments), "segments")
	b.ReportMetric(sealTook.Seconds()*1e6/float64(max(st.Messages, 1)), "seal-µs/msg")
	for _, l := range []struct {
		name string
		d    []time.Duration
	}{{"hot", hot}, {"cold", cold}, {"warm", warm}} {
		slices.Sort(l.d)
		b.ReportMetric(float64(l.d[len(l.d)/2].Microseconds())/1000, l.name+"-p50-ms")
		b.ReportMetric(float64(l.d[len(l.d)*99/100].Microseconds())/1000, l.name+"-p99-ms")
	}
}
