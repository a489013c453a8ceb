package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

// HeaderIdempotencyKey names the client-chosen key that makes a
// state-creating request safe to send again after a lost answer (the
// IETF httpapi draft's header): a request repeated with the same key
// answers what the first one made instead of making it twice.
const HeaderIdempotencyKey = "Idempotency-Key"

// MaxIdempotencyKey is the longest key accepted, in bytes (as a
// message's cid).
const MaxIdempotencyKey = 64

// CodeIdempotencyKeyReused (422): the Idempotency-Key was used before
// for a request with another body; nothing was done.
const CodeIdempotencyKeyReused = "idempotency_key_reused"

// IdempotencyKey returns the request's Idempotency-Key ("" when there is
// none): 1 to 64 bytes of visible ASCII (0x21-0x7E). A structured-field
// string ("…" in double quotes, as the IETF draft writes it) is taken
// without its quotes. A malformed key is a 400 validation_failed.
func IdempotencyKey(r *http.Request) (string, error) {
	vals := r.Header.Values(HeaderIdempotencyKey)
	if len(vals) == 0 {
		return "", nil
	}
	if len(vals) > 1 {
		return "", Errorf(http.StatusBadRequest, CodeValidation, "one %s header at most", HeaderIdempotencyKey)
	}
	k := vals[0]
	if len(k) >= 2 && k[0] == '"' && k[len(k)-1] == '"' {
		k = k[1 : len(k)-1]
	}
	if len(k) == 0 || len(k) > MaxIdempotencyKey {
		return "", Errorf(http.StatusBadRequest, CodeValidation, "%s: 1 to %d visible ASCII characters", HeaderIdempotencyKey, MaxIdempotencyKey)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e || k[i] == '"' {
			return "", Errorf(http.StatusBadRequest, CodeValidation, "%s: 1 to %d visible ASCII characters", HeaderIdempotencyKey, MaxIdempotencyKey)
		}
	}
	return k, nil
}

// Fingerprint is a digest of a request as its handler normalised it
// (v is JSON-encoded; give it in a canonical form: sorted lists,
// trimmed strings), stored with an idempotency key to tell a retry from
// another request under the same key.
func Fingerprint(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("httpapi: fingerprint of an unencodable value: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// KeyReused is the 422 answer to a key used before for another request.
func KeyReused() *Error {
	return Errorf(http.StatusUnprocessableEntity, CodeIdempotencyKeyReused,
		"this Idempotency-Key was used for another request; choose a new key for a new request")
}
