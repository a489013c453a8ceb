package cli

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
)

// A message to a user of another region that region refused for good
// (no such user there, a block, ...) says so on its line, whether the
// refusal comes live (the "undeliverable" event of user/{me}/events,
// docs/regions.md) or with the history: by hand, alice@eu wrote
// nobody@us, history said "status":"undeliverable","reason":
// "no_such_user", and the terminal client showed the message as sent,
// for good.
func TestAnUndeliverableMessageSaysSo(t *testing.T) {
	fc := &fakeClient{}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "/open nobody@us")
	typeLine(m, "hello nobody")
	c := m.st.conv("nobody@us")
	if len(c.entries) != 1 || c.entries[0].ID == "" {
		t.Fatalf("entries after the send: %+v", c.entries)
	}
	id := c.entries[0].ID
	ev := eventMsg([]byte(`{"type": "undeliverable", "id": "` + id + `", "to": "nobody@us", "reason": "no_such_user"}`))
	if ev == nil {
		t.Fatal("the undeliverable event is not taken")
	}
	m.Update(ev)
	if v := ansi.Strip(m.View()); !strings.Contains(v, "not delivered: no such user in us") {
		t.Fatalf("after the event the chat reads:\n%s", v)
	}

	// From the history (a start after the event went by).
	stored := msg(3, "me", "carol@us", "hi carol")
	stored.Status, stored.Reason = "undeliverable", "forbidden"
	line := ansi.Strip(renderEntryAt(entry{Message: stored}, "me", now))
	if !strings.Contains(line, "not delivered: carol@us does not accept your messages") {
		t.Fatalf("a stored undeliverable message reads %q", line)
	}
	if eventMsg([]byte(`{"type":"group.created","groupId":"g1"}`)) == nil {
		t.Fatal("group events are no longer taken")
	}
}
