package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// A body that is JSON but not an object (an array, a string, a number)
// is refused saying the body must be a JSON object: it said `field ""
// has the wrong type`, naming no field a client could find.
func TestABodyThatIsNotAnObjectSaysSo(t *testing.T) {
	var req struct {
		UID string `json:"uid"`
	}
	for _, body := range []string{`[]`, `["bob"]`, `"bob"`, `5`, `true`} {
		err := DecodeJSONBytes([]byte(body), &req)
		var he *Error
		if !errors.As(err, &he) || he.Status != http.StatusBadRequest || he.Code != CodeValidation || !strings.Contains(he.Message, "the body must be a JSON object") {
			t.Errorf("body %s: %v, want 400 validation_failed saying the body must be a JSON object", body, err)
		}
	}
	// A field of the wrong type is still named.
	err := DecodeJSONBytes([]byte(`{"uid":5}`), &req)
	var he *Error
	if !errors.As(err, &he) || he.Code != CodeValidation || !strings.Contains(he.Message, `field "uid"`) {
		t.Errorf(`{"uid":5}: %v, want validation_failed naming field "uid"`, err)
	}
}
