package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// A change whose client goes away while its handler runs is carried to
// its end (a commit's aftermath must not be skipped: telling a group's
// members, closing the sessions a sign-out ended); a read stops at once.
func TestAChangeOutlastsItsClientAReadDoesNot(t *testing.T) {
	e := newEnv(t, Config{})
	type probe struct {
		started, release chan struct{}
		err              chan error
	}
	newProbe := func() *probe {
		return &probe{started: make(chan struct{}), release: make(chan struct{}), err: make(chan error, 1)}
	}
	write, read := newProbe(), newProbe()
	e.g.Mount(httpapi.Route{Method: "POST", Pattern: "/user/groups/{gid}/members", Handler: func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // as a service's handler does before it proposes
		close(write.started)
		<-write.release
		write.err <- r.Context().Err()
	}})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/user/me", Handler: func(w http.ResponseWriter, r *http.Request) {
		close(read.started)
		select {
		case <-r.Context().Done():
		case <-read.release: // the test gave up
		}
		read.err <- r.Context().Err()
	}})
	e.run(t)

	send := func(req string) net.Conn {
		c, err := net.Dial("tcp", e.g.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	body := `{"uids":["bob"]}`
	wc := send("POST /user/groups/g1/members HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\n" +
		"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	rc := send("GET /user/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\n\r\n")
	<-write.started
	<-read.started
	wc.Close()
	rc.Close()
	// The read's context ends once net/http notices the client left …
	select {
	case err := <-read.err:
		if err == nil {
			t.Fatal("the read's handler was released without its context ending")
		}
	case <-time.After(10 * time.Second):
		close(read.release)
		close(write.release)
		t.Fatal("the read's context did not end when its client left: the test cannot tell")
	}
	// … while the change's does not.
	close(write.release)
	if err := <-write.err; err != nil {
		t.Fatalf("the change's context ended with its client: %v", err)
	}
}

// outlastClient's context ends writeFinishTimeout after its parent, or
// when stopped; not with the parent.
func TestOutlastClient(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	ctx, stop := outlastClient(parent)
	cancel()
	select {
	case <-ctx.Done():
		t.Fatal("ended with its parent")
	case <-time.After(20 * time.Millisecond):
	}
	stop()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not end it")
	}
	for _, c := range []struct {
		method, class string
		want          bool
	}{
		{"POST", httpapi.ClassWrite, true}, {"DELETE", httpapi.ClassAuth, true}, {"PATCH", httpapi.ClassAdmin, true},
		{"GET", httpapi.ClassRead, false}, {"HEAD", httpapi.ClassRead, false}, {"POST", httpapi.ClassUpload, false},
	} {
		if got := finishesWithoutClient(c.method, c.class); got != c.want {
			t.Errorf("%s %s: %v, want %v", c.method, c.class, got, c.want)
		}
	}
}
