package media

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// serveAs serves the service's routes on a real socket, every request
// signed in as user.
func (e *env) serveAs(user string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(httpapi.WithPrincipal(r.Context(), wire.Principal{UserID: user}))
		e.mux.ServeHTTP(w, r)
	}))
	e.t.Cleanup(srv.Close)
	return srv
}

// quotaOf is owner's quota today.
func (e *env) quotaOf(owner string) Quota {
	e.t.Helper()
	var q Quota
	if err := e.prop.DB.View(func(tx *badger.Txn) error {
		_, err := fsm.GetJSON(tx, quotaKey(owner, quotaDay(e.clock.Now())), &q)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return q
}

// The daily quota counts what was stored. An upload that broke off (the
// phone lost its connection half-way) stored nothing, yet kept its
// declared size and one upload counted for the rest of the day; and a
// multipart form sent chunked (no Content-Length, as browsers' streaming
// uploads and many HTTP libraries send) reserved the largest upload
// (25 MB) for a file of a few bytes, for good: 80 such photos used up a
// 2 GiB day. A form with a Content-Length kept its whole length (the
// boundaries and other fields too). Now the reserve is settled to the
// file's size once stored, and a failed upload gives its reserve back.
func TestTheMediaQuotaCountsOnlyWhatWasStored(t *testing.T) {
	e := newEnv(t, Config{})
	srv := e.serveAs("alice")

	// Broken off: 100 of 1000 declared bytes, then the connection closes.
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /media?name=a.txt HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n%s", bytes.Repeat([]byte("x"), 100))
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if q := e.quotaOf("alice"); q.Count == 0 {
			return fmt.Errorf("the upload has not started")
		}
		return nil
	})
	_ = c.Close()
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if got := fsmtest.Dump(t, e.prop.DB, prefixOwnerIndex+"alice/"); len(got) != 0 {
			return fmt.Errorf("the broken-off upload's record is still there: %v", got)
		}
		return nil
	})
	if q := e.quotaOf("alice"); q != (Quota{}) {
		t.Fatalf("after a broken-off upload that stored nothing, the quota counts %+v, want nothing", q)
	}

	// A multipart form, chunked, then with a Content-Length.
	for _, chunked := range []bool{true, false} {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		_ = mw.WriteField("caption", "hello")
		fw, _ := mw.CreateFormFile("file", "note.txt")
		_, _ = fw.Write([]byte("0123456789"))
		_ = mw.Close()
		var rd io.Reader = &body
		if chunked {
			rd = io.MultiReader(&body) // no length known: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/media", rd)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("upload (chunked %v): %s", chunked, resp.Status)
		}
	}
	if q := e.quotaOf("alice"); q.Count != 2 || q.Bytes != 20 {
		t.Fatalf("two stored files of 10 bytes count %d uploads, %d bytes; want 2, 20", q.Count, q.Bytes)
	}
}
