//go:build !linux

package broker

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// epollWaiter is a stand-in outside Linux: mochi then reads every client
// on a goroutine of its own (see readwait_linux.go).
type epollWaiter struct{}

func newReadWaiter(*slog.Logger) (*epollWaiter, error) {
	return nil, errors.New("broker: no read waiter on this system")
}

func (*epollWaiter) WaitRead(net.Conn, time.Time, func()) bool { return false }
func (*epollWaiter) Cancel(net.Conn)                           {}
func (*epollWaiter) Close()                                    {}
