package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// readPassword reads the password of user add and user passwd
// (--password-stdin): the first line of stdin; from a terminal, without
// echoing it (it was shown as it was typed) and until Ctrl+C.
func readPassword(ctx context.Context, stdin io.Reader, stdout io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stdout, "password: ")
		pw, err := readPasswordOrStop(ctx, int(f.Fd()), stdout)
		if err != nil {
			return "", fmt.Errorf("reading password: %w", err)
		}
		return pw, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// readPasswordOrStop reads a password from the terminal fd without echo,
// until Enter or until ctx ends (Ctrl+C, SIGTERM: term.ReadPassword does
// not heed them, so the command hung until its stop timeout, and a
// second Ctrl+C killed it with the terminal's echo still off). The
// terminal's state is put back either way.
func readPasswordOrStop(ctx context.Context, fd int, stdout io.Writer) (string, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return "", err
	}
	type answer struct {
		pw  []byte
		err error
	}
	got := make(chan answer, 1)
	go func() {
		pw, err := term.ReadPassword(fd)
		got <- answer{pw, err}
	}()
	select {
	case a := <-got:
		fmt.Fprintln(stdout)
		return string(a.pw), a.err
	case <-ctx.Done():
		_ = term.Restore(fd, state) // the read goes on until the process ends
		fmt.Fprintln(stdout)
		return "", ctx.Err()
	}
}
