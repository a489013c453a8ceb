package wire

import (
	"strconv"
	"unicode/utf8"
)

// parseClientEnvelopeFast reads the common shape of a client envelope —
// one JSON object whose members are among cid, type, body, replyTo and the
// ignored server-owned id, from, to, group, each a string without escapes
// — without encoding/json's reflection (5% of a saturated node's CPU went
// to the Decoder). Anything else (escapes, null, numbers, nested values,
// media, mentions, keys in another case, unknown keys, malformed input)
// answers ok=false and ParseEnvelope takes the full decoder, so accepted
// input decodes exactly as the decoder would (FuzzEnvelopeFastPathAgrees
// checks that). payload is valid UTF-8 (ParseEnvelope checks first).
func parseClientEnvelopeFast(payload []byte) (ce clientEnvelope, ok bool) {
	i := skipJSONSpace(payload, 0)
	if i >= len(payload) || payload[i] != '{' {
		return clientEnvelope{}, false
	}
	i = skipJSONSpace(payload, i+1)
	if i < len(payload) && payload[i] == '}' {
		i++
		return ce, skipJSONSpace(payload, i) == len(payload)
	}
	for {
		key, next, ok := plainJSONString(payload, i)
		if !ok {
			return clientEnvelope{}, false
		}
		i = skipJSONSpace(payload, next)
		if i >= len(payload) || payload[i] != ':' {
			return clientEnvelope{}, false
		}
		i = skipJSONSpace(payload, i+1)
		val, next, ok := plainJSONString(payload, i)
		if !ok {
			return clientEnvelope{}, false
		}
		switch string(key) { // no allocation: the compiler compares in place
		case "cid":
			s := string(val)
			ce.CID = &s
		case "type":
			s := string(val)
			ce.Type = &s
		case "body":
			s := string(val)
			ce.Body = &s
		case "replyTo":
			s := string(val)
			ce.ReplyTo = &s
		case "id", "from", "to", "group":
			// server-owned: accepted and ignored (the decoder keeps them
			// raw and ParseEnvelope drops them)
		default:
			return clientEnvelope{}, false
		}
		i = skipJSONSpace(payload, next)
		if i >= len(payload) {
			return clientEnvelope{}, false
		}
		switch payload[i] {
		case ',':
			i = skipJSONSpace(payload, i+1)
		case '}':
			return ce, skipJSONSpace(payload, i+1) == len(payload)
		default:
			return clientEnvelope{}, false
		}
	}
}

// plainJSONString reads a JSON string at b[i] that has no escape and no
// control character, and returns its contents and the index after its
// closing quote.
func plainJSONString(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// skipJSONSpace returns the index of the first byte at or after i that is
// not JSON whitespace.
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// appendEnvelopeFast appends e as json.Marshal encodes it when no string
// needs escaping and there is no media (json.Marshal escapes <, >, &,
// quotes, backslashes, control characters, U+2028 and U+2029, and
// replaces invalid UTF-8); ok=false otherwise, and Marshal takes
// json.Marshal. FuzzEnvelopeMarshalFastAgrees holds it to json.Marshal's
// bytes.
func appendEnvelopeFast(b []byte, e *Envelope) ([]byte, bool) {
	if e.Media != nil {
		return nil, false
	}
	for _, s := range [...]string{e.From, e.To, e.Group, e.CID, e.Type, e.Body} {
		if !plainForJSON(s) {
			return nil, false
		}
	}
	for _, s := range e.Mentions {
		if !plainForJSON(s) {
			return nil, false
		}
	}
	b = append(b, '{')
	sep := func() {
		if len(b) > 1 {
			b = append(b, ',')
		}
	}
	str := func(key, v string) {
		sep()
		b = append(b, '"')
		b = append(b, key...)
		b = append(b, `":"`...)
		b = append(b, v...)
		b = append(b, '"')
	}
	id := func(key string, v uint64) {
		sep()
		b = append(b, '"')
		b = append(b, key...)
		b = append(b, `":"`...)
		b = strconv.AppendUint(b, v, 10)
		b = append(b, '"')
	}
	if e.ID != 0 {
		id("id", uint64(e.ID))
	}
	if e.From != "" {
		str("from", e.From)
	}
	if e.To != "" {
		str("to", e.To)
	}
	if e.Group != "" {
		str("group", e.Group)
	}
	str("cid", e.CID)
	str("type", e.Type)
	if e.Body != "" {
		str("body", e.Body)
	}
	if e.ReplyTo != nil {
		id("replyTo", uint64(*e.ReplyTo))
	}
	if len(e.Mentions) > 0 {
		sep()
		b = append(b, `"mentions":[`...)
		for i, m := range e.Mentions {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = append(b, m...)
			b = append(b, '"')
		}
		b = append(b, ']')
	}
	return append(b, '}'), true
}

// plainForJSON reports whether json.Marshal writes s as it is between
// quotes.
func plainForJSON(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			return false
		}
		i += size
	}
	return true
}

// envelopeSizeHint bounds the size of e encoded without media (136: every
// key, quote and comma, and two 20-digit IDs).
func envelopeSizeHint(e *Envelope) int {
	n := 136 + len(e.From) + len(e.To) + len(e.Group) + len(e.CID) + len(e.Type) + len(e.Body)
	for _, m := range e.Mentions {
		n += 3 + len(m)
	}
	return n
}
