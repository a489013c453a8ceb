package media

import (
	"mime"
	"testing"
)

// The Content-Disposition of a file download names the file as it was
// uploaded, whole, in a form every parser reads (RFC 6266, 8187). The
// name went through url.PathEscape, which leaves '=', ':' and '@' as
// they are, characters filename*= does not allow: a strict parser (Go's
// mime, Python's email) refused the header of "a,b=c.txt".
func TestDownloadNameIsTheWholeName(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	for _, name := range []string{"payload.bat;.txt", "a,b=c.txt", `say "hi".txt`, "naïve résumé.txt", "100% done.txt"} {
		rec := e.upload("alice", name, "just text")
		e.svc.workOnce(t.Context())
		w := e.do("GET", "/media/"+rec.ID, "alice", nil, nil)
		if w.Code != 200 {
			t.Fatalf("%q: %d", name, w.Code)
		}
		cd := w.Header().Get("Content-Disposition")
		typ, params, err := mime.ParseMediaType(cd)
		if err != nil || typ != "attachment" || params["filename"] != name {
			t.Errorf("%q: Content-Disposition %q: %s %q %v", name, cd, typ, params["filename"], err)
		}
	}
}
