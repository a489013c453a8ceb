package region_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

type searchResult struct {
	Users []struct {
		UserID string `json:"userId"`
	} `json:"users"`
	Unanswered []string `json:"unanswered"`
	NextCursor string   `json:"nextCursor"`
}

func (s searchResult) ids() []string {
	var out []string
	for _, u := range s.Users {
		out = append(out, u.UserID)
	}
	return out
}

// GET /user/search?q=…&regions=all merges this region's matches with the
// linked region's, qualified; with the link cut, the other region is
// named in unanswered and this region's matches still come. Without
// regions=all nothing crosses.
func TestSearchAcrossRegions(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	tok := eu.newUser(t, "bonnie")
	eu.newUser(t, "alice")
	us.newUser(t, "bob")
	us.newUser(t, "bobby")
	us.newUser(t, "carol")
	search := func(query string) searchResult {
		t.Helper()
		var out searchResult
		if code := call(t, eu.nodes[0], tok, "GET", "/user/search?q=bo"+query, nil, &out); code != http.StatusOK {
			t.Fatalf("search%s: %d", query, code)
		}
		return out
	}
	if got := search("&regions=all"); !slices.Equal(got.ids(), []string{"bonnie", "bob@us", "bobby@us"}) || got.Unanswered == nil || len(got.Unanswered) != 0 {
		t.Fatalf("across regions: %+v", got)
	}
	if got := search("&regions=all&limit=1"); !slices.Equal(got.ids(), []string{"bonnie", "bob@us"}) {
		t.Fatalf("limit 1: %+v", got)
	}
	if got := search(""); !slices.Equal(got.ids(), []string{"bonnie"}) || got.Unanswered != nil {
		t.Fatalf("this region only: %+v", got)
	}
	var bad json.RawMessage
	if code := call(t, eu.nodes[0], tok, "GET", "/user/search?q=bo&regions=some", nil, &bad); code != http.StatusBadRequest {
		t.Fatalf("regions=some: %d %s", code, bad)
	}
	us.in.setCut(true)
	if got := search("&regions=all"); !slices.Equal(got.ids(), []string{"bonnie"}) || !slices.Equal(got.Unanswered, []string{"us"}) {
		t.Fatalf("link cut: %+v", got)
	}
	us.in.setCut(false)
	if got := search("&regions=all"); !slices.Equal(got.ids(), []string{"bonnie", "bob@us", "bobby@us"}) {
		t.Fatalf("link back: %+v", got)
	}
}

// The query connection tells this region's number like the link: a
// region numbered 0 answers a profile and a search from a region
// numbered 1 (it refused the query connection as its own number, 0).
func TestQueryConnectionTellsNumber(t *testing.T) {
	eu, us := startNumbered(t, 1, "eu", "us", nil, nil, map[string]int{"eu": 1, "us": 0})
	tok := eu.newUser(t, "alice")
	us.newUser(t, "bob")
	var p struct {
		UserID string `json:"userId"`
	}
	if code := call(t, eu.nodes[0], tok, "GET", "/user/bob@us", nil, &p); code != http.StatusOK || p.UserID != "bob@us" {
		t.Fatalf("profile: %d %+v", code, p)
	}
	var out searchResult
	if code := call(t, eu.nodes[0], tok, "GET", "/user/search?q=bob&regions=all", nil, &out); code != http.StatusOK ||
		!slices.Equal(out.ids(), []string{"bob@us"}) || len(out.Unanswered) != 0 {
		t.Fatalf("search: %d %+v", code, out)
	}
}
