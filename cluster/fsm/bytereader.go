package fsm

import (
	"bufio"
	"io"
)

type byteReader interface {
	io.Reader
	io.ByteReader
}

func newByteReader(r io.Reader) byteReader { return bufio.NewReaderSize(r, 64<<10) }
