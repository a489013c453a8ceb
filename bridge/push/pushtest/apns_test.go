package pushtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/edgechat/edgechat/internal/testutil"
)

// apnsClient is a provider as far as the mock cares: HTTP/2 with a
// provider JWT. conns are the connections it dialled, for a test to cut
// (what a killed process's kernel does).
type apnsClient struct {
	t     *testing.T
	m     *APNs
	http  *http.Client
	jwt   string
	mu    sync.Mutex
	conns []net.Conn
}

func newAPNsClient(t *testing.T, m *APNs, key *ecdsa.PrivateKey, keyID, teamID string) *apnsClient {
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": teamID, "iat": time.Now().Unix()})
	tok.Header["kid"] = keyID
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &apnsClient{t: t, m: m, jwt: signed}
	cfg := m.TLSConfig()
	cfg.NextProtos = []string{"h2"}
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: cfg,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
			if err == nil {
				c.mu.Lock()
				c.conns = append(c.conns, conn)
				c.mu.Unlock()
			}
			return conn, err
		}}
	c.http = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// send pushes one notification to token and returns the status (0 when
// no answer came).
func (c *apnsClient) send(ctx context.Context, token string) int {
	req, err := http.NewRequestWithContext(ctx, "POST", c.m.URL+"/3/device/"+token,
		strings.NewReader(`{"aps":{"alert":"hi"},"messageId":"1"}`))
	if err != nil {
		c.t.Error(err)
		return 0
	}
	req.Header.Set("authorization", "bearer "+c.jwt)
	req.Header.Set("apns-topic", "com.example.chat")
	req.Header.Set("apns-push-type", "alert")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// cut closes every connection the client dialled.
func (c *apnsClient) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// async sends in the background; the status arrives on the channel.
func (c *apnsClient) async(ctx context.Context, token string) <-chan int {
	ch := make(chan int, 1)
	go func() { ch <- c.send(ctx, token) }()
	return ch
}

func waitHeld(t *testing.T, m *APNs, n int) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if h := m.Held(); h != n {
			return fmt.Errorf("%d held, want %d", h, n)
		}
		return nil
	})
}

func statusOf(t *testing.T, ch <-chan int) int {
	t.Helper()
	return testutil.Receive(t, ch, 5*time.Second)
}

func reasonsOf(m *APNs, token string) []string {
	var out []string
	for _, r := range m.Requests() {
		if r.Token == token {
			out = append(out, fmt.Sprintf("%d %s", r.Status, r.Reason))
		}
	}
	return out
}

// HoldAfter lets n requests through and holds the next; Release answers
// the held ones; a held request whose client goes away (a cancelled
// request, a connection cut as when the process dies) is abandoned and
// never delivered.
func TestAPNsHold(t *testing.T) {
	_, key, err := NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	m := StartAPNs(t, APNsOptions{Key: &key.PublicKey, KeyID: "KEY1234567", TeamID: "TEAM123456"})
	c := newAPNsClient(t, m, key, "KEY1234567", "TEAM123456")
	cutMe := newAPNsClient(t, m, key, "KEY1234567", "TEAM123456") // its own connection, to cut
	first, kept, cancelled, cut, later := NewDeviceToken(), NewDeviceToken(), NewDeviceToken(), NewDeviceToken(), NewDeviceToken()

	m.HoldAfter(1)
	if st := c.send(context.Background(), first); st != http.StatusOK {
		t.Fatalf("the first request (let through): %d", st)
	}
	keptCh := c.async(context.Background(), kept)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancelledCh := c.async(ctx, cancelled)
	cutCh := cutMe.async(context.Background(), cut)
	waitHeld(t, m, 3)
	if m.Delivered(kept) != 0 {
		t.Fatal("a held request counts as delivered")
	}

	cancel()
	cutMe.cut()
	waitHeld(t, m, 1)
	if st := statusOf(t, cancelledCh); st != 0 {
		t.Errorf("the cancelled request got %d", st)
	}
	if st := statusOf(t, cutCh); st != 0 {
		t.Errorf("the request on the cut connection got %d", st)
	}
	for _, tok := range []string{cancelled, cut} {
		if got := reasonsOf(m, tok); len(got) != 1 || got[0] != "0 abandoned" {
			t.Errorf("an abandoned request is recorded as %q", got)
		}
		if m.Delivered(tok) != 0 {
			t.Error("an abandoned request counts as delivered")
		}
	}

	m.Release()
	if st := statusOf(t, keptCh); st != http.StatusOK {
		t.Fatalf("the released request got %d", st)
	}
	waitHeld(t, m, 0)
	if st := c.send(context.Background(), later); st != http.StatusOK {
		t.Fatalf("a request after Release: %d", st)
	}
	for tok, want := range map[string]int{first: 1, kept: 1, cancelled: 0, cut: 0, later: 1} {
		if got := m.Delivered(tok); got != want {
			t.Errorf("Delivered(%s…) = %d, want %d", tok[:8], got, want)
		}
	}

	// Hold again, then close the mock: the held request is abandoned.
	m.Hold()
	closedCh := c.async(context.Background(), later)
	waitHeld(t, m, 1)
	m.Close()
	statusOf(t, closedCh)
	if got := reasonsOf(m, later); len(got) != 2 || got[1] != "0 abandoned" {
		t.Errorf("a request held when the mock closed: %q", got)
	}
	if m.Delivered(later) != 1 {
		t.Error("a request held when the mock closed counts as delivered")
	}
}
