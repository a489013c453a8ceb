package push

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
)

func encodeB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// FuzzDecodeRegistration feeds arbitrary bodies to the strict decoder of
// POST /user/me/devices and the validation behind it: decoding fails
// only with a 4xx httpapi.Error, validation only with the service's
// sentinels, and a normalized registration is stable.
func FuzzDecodeRegistration(f *testing.F) {
	f.Add([]byte(`{"device":"phone","platform":"apns","token":"` + apnsToken("seed") + `","appId":"com.example.chat","sandbox":false}`))
	f.Add([]byte(`{"device":"pixel","platform":"fcm","token":"` + fcmToken("seed") + `"}`))
	f.Add([]byte(`{"device":"browser-1","platform":"webpush","subscription":{"endpoint":"https://push.example.com/x","keys":{"p256dh":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4","auth":"BTBZMqHH6r4Tts7J_aSIgg"}}}`))
	f.Add([]byte(`{"device":"a/b","platform":"webpush","subscription":{"endpoint":"http://x"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		reg, err := decodeRegistration(body)
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status < 400 || he.Status > 499 || he.Code == "" {
				t.Fatalf("decoder error is not a 4xx httpapi.Error: %#v", err)
			}
			return
		}
		norm, err := reg.Normalize()
		if err != nil {
			for _, want := range []error{ErrInvalidDevice, ErrInvalidPlatform, ErrInvalidToken, ErrInvalidSubscription} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("validation error without a sentinel: %v", err)
		}
		if herr := httpError(err); herr != nil {
			t.Fatalf("httpError(nil) = %v", herr)
		}
		b, _ := json.Marshal(norm)
		again, err := decodeRegistration(b)
		if err != nil {
			t.Fatalf("a normalized registration does not decode: %s: %v", b, err)
		}
		again, err = again.Normalize()
		if err != nil {
			t.Fatalf("a normalized registration is refused: %s: %v", b, err)
		}
		if b2, _ := json.Marshal(again); string(b2) != string(b) {
			t.Fatalf("not stable: %s -> %s", b, b2)
		}
		if norm.tokenOf() == "" {
			t.Fatalf("valid registration without a token: %s", b)
		}
	})
}

// FuzzDND feeds arbitrary "dnd" values to the decoder of the window (the
// one the API, the replicated command and the store share): a refusal is
// a JSON error or ErrInvalidDND, an accepted window is valid, and its
// encoding decodes to the same window and encodes the same again.
func FuzzDND(f *testing.F) {
	for _, s := range []string{`{"from":"22:00","to":"07:00","utcOffset":"+02:00"}`, `{"from":"00:00","to":"23:59","utcOffset":"-14:00"}`,
		`{"from":"07:00","to":"07:00","utcOffset":"+00:00"}`, `{"from":"24:00","to":"07:00","utcOffset":"-00:00"}`, `{"from":"1:00"}`, `null`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d DND
		if err := json.Unmarshal(b, &d); err != nil {
			var se *json.SyntaxError
			var te *json.UnmarshalTypeError
			if !errors.Is(err, ErrInvalidDND) && !errors.As(err, &se) && !errors.As(err, &te) {
				t.Fatalf("%s: unexpected error %T %v", b, err, err)
			}
			return
		}
		if string(b) == "null" {
			return // json leaves d alone
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("%s accepted as an invalid window %+v: %v", b, d, err)
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("%+v does not encode: %v", d, err)
		}
		var again DND
		if err := json.Unmarshal(out, &again); err != nil || again != d {
			t.Fatalf("%s -> %+v -> %s -> %+v, %v", b, d, out, again, err)
		}
	})
}
