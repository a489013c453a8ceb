package presence

import "testing"

// pairs is a set of "a>b" relations; it serves every fact of Social.
type pairs map[string]bool

func (p pairs) IsContact(owner, contact string) bool   { return p[owner+">"+contact] }
func (p pairs) IsBlocked(blocker, blocked string) bool { return p[blocker+">"+blocked] }
func (p pairs) SharesGroup(a, b string) bool           { return p[a+">"+b] || p[b+">"+a] }
func (p pairs) HasConversation(a, b string) bool       { return p[a+">"+b] || p[b+">"+a] }

func TestCanSeePresence(t *testing.T) {
	social := Social{
		Contacts:      pairs{"alice>bob": true, "alice>mallory": true},
		Blocks:        pairs{"alice>mallory": true},
		Groups:        pairs{"alice>carol": true, "mallory>alice": true},
		Conversations: pairs{"dave>alice": true},
	}
	s, err := New(Config{}, Deps{Publisher: &recorder{}, Social: social})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		viewer, subject string
		want            bool
	}{
		{"alice", "alice", true},    // oneself
		{"bob", "alice", true},      // in alice's contacts
		{"alice", "bob", false},     // contacts are one-way: bob has no contacts
		{"carol", "alice", true},    // a co-member
		{"alice", "carol", true},    // either way
		{"dave", "alice", true},     // a conversation partner
		{"alice", "dave", true},     // either way
		{"eve", "alice", false},     // a stranger
		{"mallory", "alice", false}, // blocked: a contact and a co-member, still no
		{"alice", "mallory", true},  // the blocker still sees the blocked co-member
	} {
		if got := s.CanSeePresence(c.viewer, c.subject); got != c.want {
			t.Errorf("CanSeePresence(%s, %s) = %v, want %v", c.viewer, c.subject, got, c.want)
		}
	}

	lone, err := New(Config{}, Deps{Publisher: &recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if !lone.CanSeePresence("alice", "alice") || lone.CanSeePresence("bob", "alice") {
		t.Fatal("without social facts a user sees only themself")
	}
}
