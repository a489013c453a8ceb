package pahoconn

import (
	"net"
	"sync"
	"testing"
)

func TestWrapLocksAllButTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if got := Wrap(tcp); got != tcp {
		t.Fatalf("a TCP connection was wrapped: %T", got)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := Wrap(a).(sync.Locker); !ok {
		t.Fatal("a connection that is not TCP came back without a lock")
	}
}
