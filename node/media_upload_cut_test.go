package node_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// An upload whose connection closes right after its last byte (a phone
// that lost the network before the answer came) is sent again with its
// Idempotency-Key, as the protocol says to: the retry is answered the
// upload (or makes it anew), never 409 "still in progress" for as long
// as the sweeper leaves an upload waiting (a day). The node stored the
// bytes, then marked the upload uploaded with the request's context,
// which the closed connection had ended, so the record stayed uploading.
func TestAnUploadCutOffAfterItsLastByteCanBeRetried(t *testing.T) {
	n := nodetest.StartNode(t)
	alice := newMediaUser(t, n, "alice")
	body := jpegWithGPS(t, 64, 32)
	host := mustHost(t, n.HTTPURL)
	post := func(key string) (int, string) {
		req, _ := http.NewRequest("POST", n.HTTPURL+"/media?name=p.jpg", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alice.token)
		req.Header.Set("Content-Type", "image/jpeg")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The close races the node's work: several uploads make the cut land
	// after the bytes were stored.
	for i := range 5 {
		key := fmt.Sprintf("cut-%d", i)
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /media?name=p.jpg HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: image/jpeg\r\nIdempotency-Key: %s\r\nContent-Length: %d\r\n\r\n", host, alice.token, key, len(body))
		if _, err := c.Write(body); err != nil {
			t.Fatal(err)
		}
		c.Close()
		checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
			if st, b := post(key); st != http.StatusOK && st != http.StatusAccepted {
				return fmt.Errorf("upload %d sent again: %d %s", i, st, b)
			}
			return nil
		})
	}
}

func mustHost(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
