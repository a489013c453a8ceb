package process

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// clamdChunk is the size of the INSTREAM chunks we send; clamd accepts
// any size up to its StreamMaxLength in total.
const clamdChunk = 64 << 10

// clamdScan streams r to clamd with the INSTREAM command (clamd(8)):
// "zINSTREAM\0", then chunks each prefixed by its length as a 4-byte
// big-endian integer, then a zero length; clamd answers one
// NUL-terminated line. A signature is ErrInfected; anything that is not
// a verdict (no daemon, a timeout, "size limit exceeded") is
// ErrScanUnavailable, since passing unscanned files would make the scan
// optional for anyone who can make it fail.
func clamdScan(ctx context.Context, addr string, timeout time.Duration, r io.Reader) error {
	network, address, ok := strings.Cut(addr, ":")
	if !ok || (network != "tcp" && network != "unix") || address == "" {
		return fmt.Errorf("%w: clamd address %q is not tcp:host:port or unix:/path", ErrScanUnavailable, addr)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, network, address)
	if err != nil {
		return fmt.Errorf("%w: clamd: %v", ErrScanUnavailable, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Closing the connection when ctx ends unblocks a read or write
	// that the deadline alone would leave running until it passes.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	werr := clamdSend(conn, r)
	// Read the reply even after a failed write: clamd closes the
	// stream when it exceeds StreamMaxLength and says so first.
	reply, rerr := bufio.NewReader(io.LimitReader(conn, 4096)).ReadString(0)
	if rerr != nil && !errors.Is(rerr, io.EOF) || reply == "" {
		if werr != nil {
			return fmt.Errorf("%w: clamd: %v", ErrScanUnavailable, werr)
		}
		return fmt.Errorf("%w: clamd reply: %v", ErrScanUnavailable, rerr)
	}
	return parseClamdReply(reply)
}

func clamdSend(w io.Writer, r io.Reader) error {
	bw := bufio.NewWriterSize(w, clamdChunk+4)
	if _, err := bw.WriteString("zINSTREAM\x00"); err != nil {
		return err
	}
	buf := make([]byte, clamdChunk)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			var l [4]byte
			binary.BigEndian.PutUint32(l[:], uint32(n))
			bw.Write(l[:])
			if _, werr := bw.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if _, err := bw.Write([]byte{0, 0, 0, 0}); err != nil {
		return err
	}
	return bw.Flush()
}

// parseClamdReply reads clamd's answer to INSTREAM: "stream: OK",
// "stream: NAME FOUND", or "... ERROR". The optional request id prefix
// of IDSESSION mode ("1: stream: OK") is accepted too.
func parseClamdReply(reply string) error {
	s := strings.TrimSpace(strings.TrimRight(reply, "\x00\n"))
	if _, rest, ok := strings.Cut(s, "stream: "); ok {
		switch {
		case rest == "OK":
			return nil
		case strings.HasSuffix(rest, " FOUND") && len(rest) > len(" FOUND"):
			return fmt.Errorf("%w: clamd: %s", ErrInfected, printable(strings.TrimSuffix(rest, " FOUND")))
		}
	}
	return fmt.Errorf("%w: clamd said %q", ErrScanUnavailable, printable(s))
}

// printable keeps a daemon's words fit for a log line: printable ASCII,
// at most 200 bytes.
func printable(s string) string {
	b := make([]byte, 0, min(len(s), 200))
	for i := 0; i < len(s) && len(b) < 200; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b = append(b, c)
		}
	}
	return string(b)
}
