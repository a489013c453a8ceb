package snowflake

import (
	"encoding/json"
	"testing"
	"time"
)

func TestNextIncreasesAndCarriesParts(t *testing.T) {
	g, err := NewGenerator(37)
	if err != nil {
		t.Fatal(err)
	}
	fixed := Epoch.Add(1234 * time.Millisecond)
	g.SetClock(func() time.Time { return fixed })
	prev := ID(0)
	for i := 0; i < 10000; i++ { // crosses the 4096 sequence limit
		id := g.Next()
		if id <= prev {
			t.Fatalf("id %d not above %d at %d", id, prev, i)
		}
		if id.Machine() != 37 {
			t.Fatalf("machine %d", id.Machine())
		}
		prev = id
	}
	first := Make(1234, 37, 0)
	if first.Time() != fixed {
		t.Fatalf("time %v want %v", first.Time(), fixed)
	}
}

func TestClockGoingBackDoesNotRepeat(t *testing.T) {
	g, _ := NewGenerator(1)
	now := Epoch.Add(time.Hour)
	g.SetClock(func() time.Time { return now })
	a := g.Next()
	now = now.Add(-time.Minute)
	b := g.Next()
	if b <= a {
		t.Fatalf("b %d <= a %d after clock step back", b, a)
	}
}

func TestObserveRestoresFloor(t *testing.T) {
	g, _ := NewGenerator(1)
	future := Make(uint64(time.Since(Epoch)/time.Millisecond)+60000, 1, 9)
	g.Observe(future)
	if id := g.Next(); id <= future {
		t.Fatalf("next %d not above observed %d", id, future)
	}
}

func TestJSONIsDecimalString(t *testing.T) {
	id := Make(99, 3, 4)
	b, _ := json.Marshal(struct{ ID ID }{id})
	want := `{"ID":"` + id.String() + `"}`
	if string(b) != want {
		t.Fatalf("got %s want %s", b, want)
	}
	var back struct{ ID ID }
	if err := json.Unmarshal(b, &back); err != nil || back.ID != id {
		t.Fatalf("round trip %v %v", back.ID, err)
	}
	if _, err := Parse("12a"); err == nil {
		t.Fatal("Parse accepted junk")
	}
	if _, err := NewGenerator(MaxMachine + 1); err == nil {
		t.Fatal("machine over limit accepted")
	}
}
