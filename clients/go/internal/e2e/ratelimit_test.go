package e2e_test

import (
	"context"
	"errors"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// An app told "rate limited" can slow down; told "refused" it drops the
// message. Over a real node's limits the client's errors say which: a
// send that gives up while the server answers 0x97 quota exceeded, and
// an API call answered 429 rate_limited, are ErrRateLimited, not
// ErrRefused.
func TestOverTheServersRateLimitsIsErrRateLimited(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.MQTTPublishRate = "1/1"
		c.NoRateLimits = false
		c.HTTPRate = map[string]string{"read": "2/5"}
	}))
	aliceTok := n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	alice := dial(t, []string{n.WSURL}, "", aliceTok, nil, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sendErr error
	for i := 0; i < 5 && sendErr == nil; i++ {
		sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, sendErr = alice.Send(sctx, "bob", "hello")
		scancel()
	}
	if !errors.Is(sendErr, edgechat.ErrRateLimited) || errors.Is(sendErr, edgechat.ErrRefused) {
		t.Fatalf("sends over the publish rate: %v; want an ErrRateLimited, not an ErrRefused", sendErr)
	}

	var apiErr error
	for i := 0; i < 20 && apiErr == nil; i++ {
		_, apiErr = alice.Profile(ctx, "bob")
	}
	var ae *edgechat.APIError
	if !errors.As(apiErr, &ae) || ae.Status != 429 || ae.RetryAfter <= 0 {
		t.Fatalf("reads over the read rate: %v; want a 429 with Retry-After", apiErr)
	}
	if !errors.Is(apiErr, edgechat.ErrRateLimited) || errors.Is(apiErr, edgechat.ErrRefused) || errors.Is(apiErr, edgechat.ErrUnavailable) {
		t.Fatalf("429: %v; want an ErrRateLimited only", apiErr)
	}
}
