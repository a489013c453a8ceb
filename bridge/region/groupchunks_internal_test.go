package region

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A state too large for a packet is cut into chunks in member order:
// each fits a batch with room to spare, carries the metadata and its
// part and the home's applied leaves, and the other region reads each;
// together they hold every member once. A small state is one entry, unchanged.
func TestStateChunks(t *testing.T) {
	small := []byte(`{"group":{"groupId":"g1","name":"n"},"members":[{"id":"alice","role":"owner"}]}`)
	if es, err := stateChunks(small); err != nil || len(es) != 1 || string(es[0][1:]) != string(small) || es[0][0] != stateMark {
		t.Fatalf("small state: %q %v", es, err)
	}
	var members []string
	for i := range 3000 {
		members = append(members, fmt.Sprintf(`{"id":"user%04d@us","role":"member"}`, i))
	}
	state := []byte(`{"group":{"groupId":"g1","name":"big","owner":"alice"},"members":[{"id":"alice","role":"owner"},` + strings.Join(members, ",") + `],"by":"alice","leaves":{"us":7}}`)
	es, err := stateChunks(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) < 2 {
		t.Fatalf("%d chunks of %d bytes", len(es), len(state))
	}
	seen := map[string]bool{}
	for i, e := range es {
		_, payloads, tooLarge := batches([]outgoing{{kind: "state", payload: e[1:]}})
		if len(tooLarge) != 0 || len(payloads) != 1 || len(payloads[0]) > maxBatchBytes*3/4 {
			t.Fatalf("chunk %d of %d bytes", i, len(e))
		}
		out, err := mirrorState("us", "eu", e[1:])
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		var c struct {
			Group   map[string]any `json:"group"`
			Members []struct{ ID string }
			By      string `json:"by"`
			Part    int    `json:"part"`
			Parts   int    `json:"parts"`
			Leaves  map[string]uint64
		}
		if err := json.Unmarshal(out, &c); err != nil || c.Part != i || c.Parts != len(es) || c.Group["groupId"] != "g1@eu" || c.By != "alice@eu" || c.Leaves["us"] != 7 {
			t.Fatalf("chunk %d as us reads it: %+v %v", i, c, err)
		}
		for _, m := range c.Members {
			if seen[m.ID] {
				t.Fatalf("%s twice", m.ID)
			}
			seen[m.ID] = true
		}
	}
	if len(seen) != 3001 || !seen["alice@eu"] || !seen["user2999"] {
		t.Fatalf("%d members across the chunks", len(seen))
	}
	for _, bad := range []string{`"part":2,"parts":2`, `"part":-1,"parts":2`, `"part":0,"parts":1001`, `"part":1`} {
		if _, err := mirrorState("us", "eu", []byte(`{"group":{"groupId":"g1"},"members":[],`+bad+`}`)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
