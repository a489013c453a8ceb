package wire

import "strings"

// MaxMentions is the most user IDs an envelope's mentions list holds:
// what a client may send, and where the server stops adding the
// @username tokens of the body. It bounds the work a single message
// asks of the push bridge in a large group.
const MaxMentions = 50

// ScanMentions returns the distinct user IDs that @username tokens in
// body name, lower-cased, in order of appearance. A token must start at a
// word boundary ("bob@alice" and "x@alice.org"-like addresses inside
// words are not mentions) and is the longest run of user ID characters
// after the '@', matched case-insensitively. Since '.' and '-' are user
// ID characters but also end sentences, a token with trailing dots or
// hyphens ("@alice.") names both the user with them and the user without.
// A token followed by '@' and more user ID characters ("@bob@us", a user
// of another region, or a mail address) is an address, not a mention:
// the users of other regions a message mentions are in the client's list.
//
// It lives here, next to the envelope, because both the archive (which
// records a message's mentions when it stores it) and the push bridge
// (which pushes mentioned members of large groups) must read a body the
// same way.
func ScanMentions(body string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(uid string) {
		if !seen[uid] && ValidUserID(uid) == nil {
			seen[uid] = true
			out = append(out, uid)
		}
	}
	for i := 0; i < len(body); i++ {
		if body[i] != '@' || (i > 0 && isUserIDByte(body[i-1])) {
			continue
		}
		end := i + 1
		for end < len(body) && isUserIDByte(body[end]) {
			end++
		}
		address := false
		for end > i+1 && end+1 < len(body) && body[end] == '@' && isUserIDByte(body[end+1]) {
			// "@bob@us": bob of region us (or a mail address), not this
			// region's bob. A user of another region goes in the
			// client's mentions list.
			address = true
			end += 2
			for end < len(body) && isUserIDByte(body[end]) {
				end++
			}
		}
		if !address {
			token := asciiLower(body[i+1 : end])
			add(token)
			add(strings.TrimRight(token, ".-"))
		}
		i = end - 1
	}
	return out
}

// isUserIDByte reports whether c may appear in a user ID, ignoring case
// (a mention is typed by people, "@Alice" names alice).
func isUserIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '-'
}

// asciiLower lowers A-Z only. User IDs are ASCII, and strings.ToLower
// would turn non-ASCII letters such as the Kelvin sign into ASCII ones,
// accepting "\u212aate" as a spelling of "kate".
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// MergeMentions joins mention lists into one: each user ID once, in
// order of first appearance (so the first list, the client's, keeps its
// order and comes first), at most MaxMentions of them. The IDs must be
// valid already (ParseEnvelope and ScanMentions make them so).
func MergeMentions(lists ...[]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range lists {
		for _, uid := range l {
			if len(out) == MaxMentions {
				return out
			}
			if !seen[uid] {
				seen[uid] = true
				out = append(out, uid)
			}
		}
	}
	return out
}
