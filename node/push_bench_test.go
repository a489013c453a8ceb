package node_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/push"
)

// The push bridge's figures, against the local APNs mock (HTTP/2 over
// TLS, verifying each provider JWT) in the same process, on the same
// cores as the node, with --push-grace 0:
//
//	go test -run '^$' -bench BenchmarkPush -benchtime 3x -timeout 30m ./node/
//
// BenchmarkPushLatency: DMs to offline users, one at a time; reports the
// commit → provider request latency (the message ID's time to the mock's
// arrival) p50 and p99. BenchmarkPushGroupFanOut: one message to a
// 10,000-member group whose members all opted in, each with one offline
// APNs device; reports pushes/s from the send to the last push.

// pushBench is a node against the mocks with n users, each with one
// registered APNs device.
type pushBench struct {
	n      *nodetest.Node
	m      pushMocks
	owner  string
	users  []string
	tokens map[string]string // device token → uid
}

func startPushBench(b *testing.B, users int) *pushBench {
	b.Helper()
	opt, m := withPushMocks(b)
	pb := &pushBench{m: m, tokens: map[string]string{}}
	pb.n = nodetest.StartNode(b, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace = 0
		c.LogLevel = "error"
	}))
	pb.owner = pb.n.NewUser(b, "owner")
	pb.users = make([]string, users)
	toks := make([]string, users)
	for i := range pb.users {
		pb.users[i] = fmt.Sprintf("p%05d", i)
		toks[i] = pushtest.NewDeviceToken()
		pb.tokens[toks[i]] = pb.users[i]
	}
	ctx := context.Background()
	parallel(b, users, func(i int) error {
		uid := pb.users[i]
		if _, err := pb.n.Auth.CreateAccount(ctx, uid, "password-push", uid); err != nil {
			return err
		}
		_, err := pb.n.Push.Register(ctx, uid, push.Registration{Device: "phone", Platform: push.PlatformAPNs, Token: toks[i]})
		return err
	})
	return pb
}

// parallel runs fn(0..n-1) on 64 goroutines (so that Raft batches the
// proposals) and fails b on the first error.
func parallel(b *testing.B, n int, fn func(i int) error) {
	b.Helper()
	work := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range 64 {
		wg.Go(func() {
			for i := range work {
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// arrivals are the mock's accepted requests for message id, by arrival.
func (pb *pushBench) arrivals(id string) []time.Time {
	var out []time.Time
	for _, r := range pb.m.apns.Requests() {
		if r.Status == 200 && r.Custom["messageId"] == id {
			out = append(out, r.At)
		}
	}
	return out
}

func (pb *pushBench) waitArrivals(b *testing.B, id string, want int) []time.Time {
	b.Helper()
	every := 2 * time.Millisecond
	if want > 100 {
		every = 20 * time.Millisecond // counting 10,000 requests is not free
	}
	checkFor(b, 5*time.Minute, every, func() error {
		got := pb.m.apns.Count(func(r *pushtest.APNsRequest) bool { return r.Status == 200 && r.Custom["messageId"] == id })
		if got < want {
			return fmt.Errorf("%d of %d pushes for %s", got, want, id)
		}
		return nil
	})
	return pb.arrivals(id)
}

func BenchmarkPushLatency(b *testing.B) {
	const recipients = 200
	pb := startPushBench(b, recipients)
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		for _, uid := range pb.users {
			var sent struct {
				ID string `json:"id"`
			}
			if st := api(b, pb.n, pb.owner, "POST", "/chat/messages",
				map[string]any{"to": uid, "cid": fmt.Sprintf("lat-%s-%d", uid, len(lat)), "type": "text", "body": "ping"}, &sent); st != 201 {
				b.Fatalf("send: %d", st)
			}
			at := pb.waitArrivals(b, sent.ID, 1)[0]
			id, err := snowflake.Parse(sent.ID)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, at.Sub(id.Time()))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

func BenchmarkPushGroupFanOut(b *testing.B) {
	const members = 10000
	pb := startPushBench(b, members-1)
	ctx := context.Background()
	var g group
	if st := api(b, pb.n, pb.owner, "POST", "/user/groups", map[string]any{"name": "big", "members": pb.users[:999]}, &g); st != 201 {
		b.Fatalf("create group: %d", st)
	}
	for i := 999; i < len(pb.users); i += 1000 {
		end := min(i+1000, len(pb.users))
		if st := api(b, pb.n, pb.owner, "POST", "/user/groups/"+g.GroupID+"/members", map[string]any{"uids": pb.users[i:end]}, nil); st != 200 {
			b.Fatalf("add members %d..%d: %d", i, end, st)
		}
	}
	parallel(b, len(pb.users), func(i int) error {
		_, err := pb.n.Push.OptIn(ctx, pb.users[i], g.GroupID)
		return err
	})
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		var sent struct {
			ID string `json:"id"`
		}
		if st := api(b, pb.n, pb.owner, "POST", "/chat/messages",
			map[string]any{"group": g.GroupID, "cid": fmt.Sprint("fan-", i), "type": "text", "body": "to all"}, &sent); st != 201 {
			b.Fatalf("send: %d", st)
		}
		got := pb.waitArrivals(b, sent.ID, len(pb.users))
		total += slices.MaxFunc(got, time.Time.Compare).Sub(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(len(pb.users)*b.N)/total.Seconds(), "pushes/s")
}
