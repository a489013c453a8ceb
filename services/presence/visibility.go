package presence

// The visibility rule: who may watch whose presence. The facts come from
// the services that own them (contacts, blocks and groups from users,
// conversations from the archive) through the small interfaces below;
// the rule itself is presence's.

// Contacts answers whether owner has contact in their contact list.
type Contacts interface {
	IsContact(owner, contact string) bool
}

// Blocks answers whether blocker has blocked blocked.
type Blocks interface {
	IsBlocked(blocker, blocked string) bool
}

// Groups answers whether a and b are members of a common group.
type Groups interface {
	SharesGroup(a, b string) bool
}

// Conversations answers whether a and b have a direct conversation.
type Conversations interface {
	HasConversation(a, b string) bool
}

// Social are the facts the visibility rule reads. Every field may be nil:
// a nil Blocks blocks nobody, a nil Contacts, Groups or Conversations
// grants nothing.
type Social struct {
	Contacts      Contacts
	Blocks        Blocks
	Groups        Groups
	Conversations Conversations
}

// CanSeePresence reports whether viewer may watch subject's presence:
// the user themself, the users subject has in their contacts, co-members
// of a group and conversation partners — never a user subject blocked.
// The broker asks it on every subscribe to and delivery of presence/{uid}
// and the HTTP endpoint on every GET, so every answer must be cheap (the
// users service serves its part from a cache).
func (s *Service) CanSeePresence(viewer, subject string) bool {
	if viewer == subject {
		return true
	}
	so := s.social
	if so.Blocks != nil && so.Blocks.IsBlocked(subject, viewer) {
		return false
	}
	return (so.Contacts != nil && so.Contacts.IsContact(subject, viewer)) ||
		(so.Groups != nil && so.Groups.SharesGroup(viewer, subject)) ||
		(so.Conversations != nil && so.Conversations.HasConversation(viewer, subject))
}
