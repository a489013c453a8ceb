package region

// Mentions across regions (issue 14): a stored envelope's mentions name
// users as its region names them (bob, a user of this region; carol@us,
// a user of another region that the client listed). On the link they
// are qualified with the sending region (bob@eu), and the receiving
// region names its own users plainly again (carol): its push bridge then
// finds a mentioned member of a large group as it would for a local
// message. A mention of a third region's user stays as it is.

import (
	"slices"
	"strings"

	"github.com/edgechat/edgechat/internal/address"
)

// qualifyMentions names the mentions of region own's users name@own.
func qualifyMentions(mentions []string, own string) []string {
	if len(mentions) == 0 {
		return nil
	}
	out := make([]string, len(mentions))
	for i, m := range mentions {
		if strings.IndexByte(m, '@') < 0 {
			m = address.Qualify(m, own)
		}
		out[i] = m
	}
	return out
}

// localMentions names the mentions of region local's users plainly; an
// unqualified mention from link's region (which qualifies them all) is
// one of its users.
func localMentions(mentions []string, local, link string) []string {
	if len(mentions) == 0 {
		return nil
	}
	out := make([]string, 0, len(mentions))
	for _, m := range mentions {
		if name, ok := strings.CutSuffix(m, "@"+local); ok {
			m = name
		} else if strings.IndexByte(m, '@') < 0 {
			m = address.Qualify(m, link)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}
