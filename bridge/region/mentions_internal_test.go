package region

import (
	"slices"
	"testing"
)

// Mentions cross qualified with the sending region and come back to
// plain names in the receiving region; a third region's user stays.
func TestMentionsAcrossLinks(t *testing.T) {
	if got := qualifyMentions([]string{"bob", "carol@us", "dan@ap"}, "eu"); !slices.Equal(got, []string{"bob@eu", "carol@us", "dan@ap"}) {
		t.Fatalf("qualified %v", got)
	}
	if got := localMentions([]string{"bob@eu", "carol@us", "dan@ap", "erin", "carol"}, "us", "eu"); !slices.Equal(got, []string{"bob@eu", "carol", "dan@ap", "erin@eu", "carol@eu"}) {
		t.Fatalf("localized %v", got)
	}
	if qualifyMentions(nil, "eu") != nil || localMentions(nil, "us", "eu") != nil {
		t.Fatal("no mentions became some")
	}
	env, _, err := groupMessage("us", "eu", []byte(`{"id":"1","from":"alice@eu","group":"g1@eu","cid":"c","type":"text","body":"x","mentions":["bob@us","alice@eu"]}`))
	if err != nil || !slices.Equal(env.Mentions, []string{"bob", "alice@eu"}) {
		t.Fatalf("group message mentions %v, %v", env.Mentions, err)
	}
	p, err := forwardPayload([]byte(`{"id":"1","from":"alice","to":"bob@us","cid":"c","type":"text","body":"x","mentions":["bob@us","carol"]}`), "eu")
	if err != nil {
		t.Fatal(err)
	}
	b := &Bridge{cfg: Config{Region: "us"}}
	if b.m, err = newMetrics(nil, b); err != nil {
		t.Fatal(err)
	}
	env, err = b.check("eu", DMTopic("eu"), p)
	if err != nil || !slices.Equal(env.Mentions, []string{"bob", "carol@eu"}) {
		t.Fatalf("direct message mentions %v, %v (%s)", env.Mentions, err, p)
	}
}
