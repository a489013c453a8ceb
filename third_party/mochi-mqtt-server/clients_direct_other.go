// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

//go:build !unix

package mqtt

import (
	"errors"
	"net"
	"syscall"
)

// rawConn: direct writes are implemented for unix sockets only.
func rawConn(net.Conn) syscall.RawConn { return nil }

func writeNonBlocking(syscall.RawConn, []byte, bool) (int, error) {
	return 0, errors.ErrUnsupported
}
