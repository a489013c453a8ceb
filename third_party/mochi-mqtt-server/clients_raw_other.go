// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2026 edgechat contributors

//go:build !unix

package mqtt

import (
	"io"
	"net"
	"syscall"
)

// newRawReader: raw system calls are implemented for unix sockets only.
func newRawReader(net.Conn, syscall.RawConn) io.Reader { return nil }
