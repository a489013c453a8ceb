// Package snowflake generates and parses edgechat message IDs: 64-bit
// integers made of 41 bits of milliseconds since Epoch, 10 bits of machine
// number and 12 bits of sequence, so that IDs sort by creation time.
package snowflake

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Epoch is 2024-01-01T00:00:00Z; 41 bits of milliseconds last until 2093.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	machineBits = 10
	seqBits     = 12
	// MaxMachine is the highest machine number a node may hold.
	MaxMachine = 1<<machineBits - 1
	maxSeq     = 1<<seqBits - 1
)

// ErrInvalidID is returned when a string is not a decimal snowflake ID.
var ErrInvalidID = errors.New("snowflake: invalid id")

// ID is a snowflake ID. In JSON it travels as a decimal string because
// JavaScript numbers cannot hold 64-bit integers.
type ID uint64

// Parse reads a decimal ID.
func Parse(s string) (ID, error) {
	if s == "" || len(s) > 20 {
		return 0, ErrInvalidID
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrInvalidID, s)
	}
	return ID(v), nil
}

// String returns the decimal form.
func (id ID) String() string { return strconv.FormatUint(uint64(id), 10) }

// Time is the creation time encoded in the ID.
func (id ID) Time() time.Time {
	return Epoch.Add(time.Duration(uint64(id)>>(machineBits+seqBits)) * time.Millisecond)
}

// Machine is the machine number encoded in the ID.
func (id ID) Machine() uint16 { return uint16(uint64(id) >> seqBits & MaxMachine) }

// Seq is the per-millisecond sequence encoded in the ID.
func (id ID) Seq() uint16 { return uint16(uint64(id) & maxSeq) }

// MarshalText encodes the ID as a decimal string (a JSON string).
func (id ID) MarshalText() ([]byte, error) {
	return strconv.AppendUint(nil, uint64(id), 10), nil
}

// UnmarshalText decodes a decimal string.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Make builds an ID from its parts; used by tests and by Generator.
func Make(ms uint64, machine uint16, seq uint16) ID {
	return ID(ms<<(machineBits+seqBits) | uint64(machine&MaxMachine)<<seqBits | uint64(seq&maxSeq))
}

// Generator hands out strictly increasing IDs for one machine number. If
// the wall clock steps backwards it keeps counting from the last
// millisecond it used instead of repeating IDs.
type Generator struct {
	mu      sync.Mutex
	machine uint16
	lastMs  uint64
	seq     uint16
	now     func() time.Time
}

// NewGenerator returns a generator for the machine number m.
func NewGenerator(m uint16) (*Generator, error) {
	if m > MaxMachine {
		return nil, fmt.Errorf("snowflake: machine number %d over %d", m, MaxMachine)
	}
	return &Generator{machine: m, now: time.Now}, nil
}

// SetClock replaces the wall clock; for tests.
func (g *Generator) SetClock(now func() time.Time) {
	g.mu.Lock()
	g.now = now
	g.mu.Unlock()
}

// Observe makes sure every later ID is greater than id, for example the
// highest ID found on disk after a restart with a clock that went back.
func (g *Generator) Observe(id ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := uint64(id) >> (machineBits + seqBits)
	if ms > g.lastMs || (ms == g.lastMs && id.Seq() >= g.seq) {
		g.lastMs, g.seq = ms, id.Seq()
	}
}

// Next returns a new ID, greater than every ID this generator returned or
// observed before.
func (g *Generator) Next() ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := uint64(0)
	if d := g.now().Sub(Epoch); d > 0 {
		ms = uint64(d / time.Millisecond)
	}
	switch {
	case ms > g.lastMs:
		g.lastMs, g.seq = ms, 0
	case g.seq < maxSeq:
		g.seq++
	default:
		// Sequence exhausted in this millisecond (or the clock is behind):
		// borrow the next millisecond rather than block.
		g.lastMs++
		g.seq = 0
	}
	return Make(g.lastMs, g.machine, g.seq)
}
