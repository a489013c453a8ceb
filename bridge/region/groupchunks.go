package region

// Large groups across regions (issue 14): a group's state goes whole
// after every change, and a link packet holds at most maxBatchBytes, so
// the state of a group above about 1,500 members is staged as several
// outbox entries (chunks), in one transaction and so next to each other
// in the outbox: each carries the group's metadata, the author of the
// change, a share of the members, and "part"/"parts" (0-based). The
// receiving region keeps the chunks of a state aside as they commit and
// applies the mirror only when the last one has committed
// (users.ApplyMirror): its members never see half a member list. A
// resent chunk is stored again in place; chunk 0 starts a state afresh.

import (
	"encoding/json"
	"fmt"
)

// maxStateChunk bounds the members' share of a chunk: with the metadata
// (a group's name, description and avatar are bounded to a few KiB) a
// chunk stays well under maxBatchBytes.
const maxStateChunk = 40 << 10

// MaxStateParts bounds the chunks of one state (about 1,000 members a
// chunk: a group of a million members).
const MaxStateParts = 1000

// chunkedState is a group's state on the link, members left as they are.
type chunkedState struct {
	Group   json.RawMessage   `json:"group"`
	Members []json.RawMessage `json:"members"`
	By      string            `json:"by,omitempty"`
	Part    int               `json:"part,omitempty"`
	Parts   int               `json:"parts,omitempty"`
	Leaves  json.RawMessage   `json:"leaves,omitempty"` // in every chunk
}

// stateChunks splits a group's state (users.RemoteGroup's JSON) into the
// outbox entries that carry it: one, as it is, when it fits.
func stateChunks(state []byte) ([][]byte, error) {
	if len(state) <= maxStateChunk {
		return [][]byte{append([]byte{stateMark}, state...)}, nil
	}
	var st chunkedState
	if err := json.Unmarshal(state, &st); err != nil {
		return nil, fmt.Errorf("region: group state: %w", err)
	}
	var shares [][]json.RawMessage
	var cur []json.RawMessage
	size := 0
	for _, m := range st.Members {
		if len(cur) > 0 && size+len(m)+1 > maxStateChunk {
			shares, cur, size = append(shares, cur), nil, 0
		}
		cur = append(cur, m)
		size += len(m) + 1
	}
	if len(cur) > 0 || len(shares) == 0 {
		shares = append(shares, cur)
	}
	if len(shares) > MaxStateParts {
		return nil, fmt.Errorf("region: group state of %d members: more than %d chunks", len(st.Members), MaxStateParts)
	}
	out := make([][]byte, 0, len(shares))
	for i, members := range shares {
		if members == nil {
			members = []json.RawMessage{}
		}
		c := st
		c.Members, c.Part, c.Parts = members, i, len(shares)
		b, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		out = append(out, append([]byte{stateMark}, b...))
	}
	return out, nil
}
