package wire

import (
	"slices"
	"testing"
)

// A client may list a user of another region (name@region) among its
// mentions; a malformed address is refused like any bad entry.
func TestMentionsOfOtherRegions(t *testing.T) {
	env, err := ParseEnvelope([]byte(`{"cid":"c","type":"text","body":"x","mentions":["Bob@US","carol","bob@us"]}`))
	if err != nil || !slices.Equal(env.Mentions, []string{"bob@us", "carol"}) {
		t.Fatalf("%v, %v", env.Mentions, err)
	}
	for _, bad := range []string{`["bob@"]`, `["@us"]`, `["bob@us@eu"]`, `["b/b@us"]`} {
		if _, err := ParseEnvelope([]byte(`{"cid":"c","type":"text","body":"x","mentions":` + bad + `}`)); err == nil {
			t.Errorf("mentions %s accepted", bad)
		}
	}
}
