package wire

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestScanMentions(t *testing.T) {
	tests := []struct {
		body string
		want []string
	}{
		{"", nil},
		{"no mention", nil},
		{"@bob", []string{"bob"}},
		{"hi @bob!", []string{"bob"}},
		{"(@bob)", []string{"bob"}},
		{"@Bob @BOB @bob", []string{"bob"}},
		{"@bob @carol", []string{"bob", "carol"}},
		{"bob@carol.example", nil}, // inside a word: an address
		{"x_@carol", nil},
		{"@abc@bob", nil},                         // an address (abc of region bob), not a mention of this region's abc
		{"@bob@us hi @carol", []string{"carol"}},  // bob@us goes in the client's mentions list
		{"@bob@us@@carol", []string{"carol"}},     // the address ends at "@@": carol starts at a boundary
		{"@bob.@us", nil},                         // not "bob." nor "bob" either
		{"@bob@ noon", []string{"bob"}},           // nothing after the second '@': no address
		{"@bo", nil},                              // too short for a user ID
		{"@1bob", nil},                            // must start with a letter
		{"@", nil},                                // nothing after
		{"@@bob", []string{"bob"}},                // the second '@' starts at a boundary
		{"thanks @bob.", []string{"bob.", "bob"}}, // sentence end, or the user "bob."
		{"@bob-- what", []string{"bob--", "bob"}},
		{"@jo.smith, hi", []string{"jo.smith"}},
		{"@bobé", []string{"bob"}}, // é is not a user ID character: a boundary
		{"é@bob", []string{"bob"}},
		{"@" + strings.Repeat("a", 33), nil}, // longer than a user ID
	}
	for _, tt := range tests {
		if got := ScanMentions(tt.body); !slices.Equal(got, tt.want) {
			t.Errorf("ScanMentions(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

// FuzzScanMentions checks the scanner against a regular expression of
// the same rule: the user IDs found are exactly the valid ones among the
// @tokens at a word boundary (and those tokens without trailing dots and
// hyphens), each once, in order.
func FuzzScanMentions(f *testing.F) {
	for _, s := range []string{"@bob", "hi @Bob.", "a@b.c", "@@x-y_z", "@bobé", "\xff@bob\x00", "@a.b.c...", "\u212a@kate"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got := ScanMentions(body)
		for _, uid := range got {
			if err := ValidUserID(uid); err != nil {
				t.Fatalf("ScanMentions(%q) returned %q, not a user ID", body, uid)
			}
		}
		if want := mentionsByRegexp(body); !slices.Equal(got, want) {
			t.Fatalf("ScanMentions(%q) = %q, want %q", body, got, want)
		}
	})
}

// mentionToken is an '@' at the start or after a byte that cannot be in
// a user ID, and the user ID characters after it, then any "@region"
// parts that make it an address.
var mentionToken = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_.\-])@([a-zA-Z0-9_.\-]+)((?:@[a-zA-Z0-9_.\-]+)*)`)

func mentionsByRegexp(body string) []string {
	var out []string
	add := func(uid string) {
		if ValidUserID(uid) == nil && !slices.Contains(out, uid) {
			out = append(out, uid)
		}
	}
	// Matches are found one at a time, each search starting at the last
	// byte of the previous token, so that this byte still counts as what
	// precedes the next '@' ("@ab@cd" mentions ab only).
	for rest := body; ; {
		loc := mentionToken.FindStringSubmatchIndex(rest)
		if loc == nil {
			return out
		}
		if loc[5] == loc[4] { // not followed by "@region": an address is no mention
			token := oracleLower(rest[loc[2]:loc[3]])
			add(token)
			add(strings.TrimRight(token, ".-"))
		}
		rest = rest[loc[5]-1:]
	}
}

// oracleLower lowers A-Z only, as user IDs are ASCII (strings.ToLower
// would turn the Kelvin sign into a 'k'); written apart from the
// package's asciiLower so that the oracle does not share its bugs.
func oracleLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func TestParseEnvelopeMentions(t *testing.T) {
	ids := make([]string, MaxMentions+1)
	for i := range ids {
		ids[i] = fmt.Sprintf(`"user%02d"`, i)
	}
	tests := []struct {
		name, mentions string // the raw JSON value; "" leaves the field out
		want           []string
		ok             bool
	}{
		{"absent", "", nil, true},
		{"null", "null", nil, true},
		{"empty", "[]", nil, true},
		{"one", `["bob"]`, []string{"bob"}, true},
		{"lower-cased", `["Bob","CAROL"]`, []string{"bob", "carol"}, true},
		{"duplicates dropped, first kept", `["carol","bob","Carol","bob"]`, []string{"carol", "bob"}, true},
		{"the limit", "[" + strings.Join(ids[:MaxMentions], ",") + "]", nil, true},
		{"over the limit", "[" + strings.Join(ids, ",") + "]", nil, false},
		{"over the limit counting duplicates", "[" + strings.Repeat(`"bob",`, MaxMentions) + `"bob"]`, nil, false},
		{"not a user id", `["bob","a/b"]`, nil, false},
		{"too short", `["bo"]`, nil, false},
		{"empty string", `[""]`, nil, false},
		{"Kelvin sign is not a k", `["\u212aate"]`, nil, false},
		{"a string", `"bob"`, nil, false},
		{"numbers", `[1,2]`, nil, false},
		{"an object", `{"bob":true}`, nil, false},
		{"nested", `[["bob"]]`, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := `{"cid":"c","type":"text","body":"hi"`
			if tt.mentions != "" {
				payload += `,"mentions":` + tt.mentions
			}
			env, err := ParseEnvelope([]byte(payload + "}"))
			if !tt.ok {
				var ee *EnvelopeError
				if !errors.As(err, &ee) || ee.Field != "mentions" || !errors.Is(err, ErrInvalidField) {
					t.Fatalf("got %+v, %v; want an invalid mentions field", env, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil && !slices.Equal(env.Mentions, tt.want) {
				t.Fatalf("mentions %q, want %q", env.Mentions, tt.want)
			}
			if tt.want == nil && tt.name != "the limit" && env.Mentions != nil {
				t.Fatalf("mentions %q, want none", env.Mentions)
			}
			if tt.name == "the limit" && len(env.Mentions) != MaxMentions {
				t.Fatalf("%d mentions kept", len(env.Mentions))
			}
		})
	}
}

func TestMergeMentions(t *testing.T) {
	many := make([]string, MaxMentions+5)
	for i := range many {
		many[i] = fmt.Sprintf("user%02d", i)
	}
	tests := []struct {
		name  string
		lists [][]string
		want  []string
	}{
		{"nothing", nil, nil},
		{"empty lists", [][]string{nil, {}}, nil},
		{"client's first", [][]string{{"carol", "bob"}, {"alice", "bob"}}, []string{"carol", "bob", "alice"}},
		{"scanned only", [][]string{nil, {"bob"}}, []string{"bob"}},
		{"capped", [][]string{many[:30], many[20:]}, many[:MaxMentions]},
		{"client's list fills the cap", [][]string{many[:MaxMentions], {"zed"}}, many[:MaxMentions]},
	}
	for _, tt := range tests {
		if got := MergeMentions(tt.lists...); !slices.Equal(got, tt.want) {
			t.Errorf("%s: MergeMentions = %q, want %q", tt.name, got, tt.want)
		}
	}
}
