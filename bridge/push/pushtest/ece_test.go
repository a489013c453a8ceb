package pushtest

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	webpush "github.com/SherClockHolmes/webpush-go"
)

// captureClient is a webpush.HTTPClient that keeps the request body.
type captureClient struct{ body []byte }

func (c *captureClient) Do(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	c.body = b
	return &http.Response{StatusCode: http.StatusCreated, Body: io.NopCloser(strings.NewReader(""))}, nil
}

// encrypt has webpush-go (an independent implementation) encrypt msg for
// a new browser key pair.
func encrypt(t testing.TB, msg []byte, recordSize uint32) (body []byte, ua *ecdh.PrivateKey, auth []byte) {
	t.Helper()
	ua, err := ecdh.P256().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	auth = randomBytes(16)
	pub, priv, err := NewVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	c := &captureClient{}
	sub := &webpush.Subscription{Endpoint: "https://push.example.com/x", Keys: webpush.Keys{
		P256dh: base64.RawURLEncoding.EncodeToString(ua.PublicKey().Bytes()),
		Auth:   base64.RawURLEncoding.EncodeToString(auth),
	}}
	resp, err := webpush.SendNotification(msg, sub, &webpush.Options{
		HTTPClient: c, Subscriber: "a@example.com", VAPIDPublicKey: pub, VAPIDPrivateKey: priv, RecordSize: recordSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return c.body, ua, auth
}

func TestDecryptWebPush(t *testing.T) {
	msg := []byte(`{"title":"Alice","body":"hello"}`)
	for _, rs := range []uint32{0, 200} {
		body, ua, auth := encrypt(t, msg, rs)
		got, err := DecryptWebPush(body, ua, auth)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("record size %d: %q, %v", rs, got, err)
		}
		// The wrong auth secret or key fails; so does a flipped bit.
		if _, err := DecryptWebPush(body, ua, randomBytes(16)); err == nil {
			t.Error("decrypted with the wrong auth secret")
		}
		other, _ := ecdh.P256().GenerateKey(nil)
		if _, err := DecryptWebPush(body, other, auth); err == nil {
			t.Error("decrypted with the wrong key")
		}
		bad := bytes.Clone(body)
		bad[len(bad)-1] ^= 1
		if _, err := DecryptWebPush(bad, ua, auth); err == nil {
			t.Error("decrypted a tampered body")
		}
	}
}

func FuzzDecryptWebPush(f *testing.F) {
	body, ua, auth := encrypt(f, []byte("seed"), 0)
	f.Add(body)
	f.Add(body[:21])
	f.Add(body[:100])
	f.Add([]byte{})
	hdr := bytes.Clone(body[:21+65])
	hdr[16], hdr[17], hdr[18], hdr[19] = 0, 0, 0, 18 // the smallest record size
	f.Add(append(hdr, make([]byte, 40)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := DecryptWebPush(b, ua, auth)
		if err == nil && len(out) >= len(b) {
			t.Fatalf("plaintext of %d bytes from %d", len(out), len(b))
		}
	})
}
