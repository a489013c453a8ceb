//go:build nochat

package main

import (
	"context"
	"errors"
	"io"
)

// errNoChat is what `edgechat chat` says in a binary built without the
// terminal client.
var errNoChat = errors.New("this binary was built without the terminal chat client (build tag nochat, as make build and the container image build it, to keep the edge binary small); build one with it: go build ./cmd/edgechat")

// chatCmd stands in for the terminal client in edge builds (see chat.go).
func chatCmd(context.Context, []string, io.Reader, io.Writer) error {
	return errNoChat
}
