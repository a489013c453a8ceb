package push

import (
	"encoding/json"
	"fmt"
	"time"
)

// MaxUTCOffset bounds a DND window's time zone offset: real zones lie
// within UTC-12:00 and UTC+14:00, so anything beyond ±14:00 is a client
// bug that would silently shift the window.
const MaxUTCOffset = 14 * time.Hour

// DND is a daily do-not-disturb window in the user's time zone: pushes
// are held back from From until To, clock times since local midnight,
// whole minutes (From after To crosses midnight, as in 22:00-07:00).
// UTCOffset is the zone's offset east of UTC (+2h for UTC+02:00), as the
// client reports it; the server has no time zone database of the user's.
//
// It has the fields of bridge/push.DND, so the bridge converts one into
// the other with a plain conversion; this package does not import the
// bridge (the bridge depends on the data side, not the other way round),
// hence the copied rules in Validate.
//
// In JSON (the API, the replicated command and the stored settings alike)
// it is {"from":"22:00","to":"07:00","utcOffset":"+02:00"}.
type DND struct {
	From, To  time.Duration
	UTCOffset time.Duration
}

// Validate reports a window that could never be meant, wrapping
// ErrInvalidDND: clock times outside a day or not in whole minutes (the
// API cannot express them), an offset beyond ±MaxUTCOffset, or From equal
// to To, an empty window that would look like DND is on while it never
// holds anything back (turning DND off is saying so).
func (d DND) Validate() error {
	const day = 24 * time.Hour
	switch {
	case d.From < 0 || d.From >= day || d.To < 0 || d.To >= day || d.From%time.Minute != 0 || d.To%time.Minute != 0:
		return fmt.Errorf("%w: from and to must be clock times 00:00 to 23:59", ErrInvalidDND)
	case d.UTCOffset < -MaxUTCOffset || d.UTCOffset > MaxUTCOffset || d.UTCOffset%time.Minute != 0:
		return fmt.Errorf("%w: utcOffset must be ±HH:MM within ±14:00", ErrInvalidDND)
	case d.From == d.To:
		return fmt.Errorf("%w: from equals to, an empty window (send \"dnd\": null to turn it off)", ErrInvalidDND)
	}
	return nil
}

// dndJSON is the wire form of a DND.
type dndJSON struct {
	From      string `json:"from"`
	To        string `json:"to"`
	UTCOffset string `json:"utcOffset"`
}

// MarshalJSON writes the clock form; an invalid window is an error, so
// that one never reaches the log or the store.
func (d DND) MarshalJSON() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(dndJSON{From: formatClock(d.From), To: formatClock(d.To), UTCOffset: formatOffset(d.UTCOffset)})
}

// UnmarshalJSON reads the clock form and validates it; errors wrap
// ErrInvalidDND when the shape is right but a value is not.
func (d *DND) UnmarshalJSON(b []byte) error {
	var j dndJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	v, err := j.parse()
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// parse converts and validates the wire form.
func (j dndJSON) parse() (DND, error) {
	from, ok1 := parseClock(j.From)
	to, ok2 := parseClock(j.To)
	if !ok1 || !ok2 {
		return DND{}, fmt.Errorf("%w: from and to must be 24-hour clock times HH:MM", ErrInvalidDND)
	}
	off, ok := parseOffset(j.UTCOffset)
	if !ok {
		return DND{}, fmt.Errorf("%w: utcOffset must be ±HH:MM within ±14:00", ErrInvalidDND)
	}
	d := DND{From: from, To: to, UTCOffset: off}
	return d, d.Validate()
}

// parseClock reads exactly "HH:MM", 00:00 to 23:59.
func parseClock(s string) (time.Duration, bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	h, ok1 := twoDigits(s[0:2])
	m, ok2 := twoDigits(s[3:5])
	if !ok1 || !ok2 || h > 23 || m > 59 {
		return 0, false
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, true
}

// parseOffset reads exactly "+HH:MM" or "-HH:MM" within ±14:00.
func parseOffset(s string) (time.Duration, bool) {
	if len(s) != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':' {
		return 0, false
	}
	h, ok1 := twoDigits(s[1:3])
	m, ok2 := twoDigits(s[4:6])
	if !ok1 || !ok2 || m > 59 {
		return 0, false
	}
	off := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute
	if off > MaxUTCOffset {
		return 0, false
	}
	if s[0] == '-' {
		off = -off
	}
	return off, true
}

func twoDigits(s string) (int, bool) {
	if len(s) != 2 || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' {
		return 0, false
	}
	return int(s[0]-'0')*10 + int(s[1]-'0'), true
}

func formatClock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// formatOffset writes "+HH:MM"; zero is "+00:00" (so "-00:00" comes back
// normalized).
func formatOffset(d time.Duration) string {
	sign := '+'
	if d < 0 {
		sign, d = '-', -d
	}
	return fmt.Sprintf("%c%02d:%02d", sign, int(d/time.Hour), int(d%time.Hour/time.Minute))
}
