//go:build !nochat

package main

// The terminal chat client (clients/cli, with its terminal UI libraries)
// is about 2 MB of the binary. Edge builds leave it out with the build tag
// nochat (make build, make cross, deploy/Dockerfile): see chat_nochat.go.

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/edgechat/edgechat/clients/cli"
)

// chatCmd: edgechat chat --server URL (--user NAME [--token T] | --oidc PROVIDER) [--device NAME]
func chatCmd(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", envOr("EDGECHAT_SERVER", "http://127.0.0.1:8080"), "HTTP URL of a node")
	user := fs.String("user", os.Getenv("EDGECHAT_USER"), "user name")
	token := fs.String("token", os.Getenv("EDGECHAT_TOKEN"), "access token (instead of a password prompt)")
	provider := fs.String("oidc", "", "sign in through the server's OpenID Connect provider of this name (device flow)")
	device := fs.String("device", os.Getenv("EDGECHAT_DEVICE"), "this device's name: the MQTT client ID's device part, shown in the session list (default go- and random hex)")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if *provider != "" && given["token"] {
		return fmt.Errorf("%w: --oidc and --token are two ways to sign in: give one", errUsage)
	}
	// A terminal that closes sends SIGHUP: the client stops as on
	// SIGTERM (main's context), ending a password sign-in's session
	// (cli.Run), rather than dying at once and leaving the session in
	// the user's list. Not when SIGHUP is ignored (nohup): Notify would
	// undo that.
	if !signal.Ignored(syscall.SIGHUP) {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGHUP)
		defer stop()
	}
	// Where the client keeps its sync cursor (0600, next to the OIDC
	// sessions); without a config directory it keeps nothing.
	state, _ := cli.DefaultStateDir()
	if *provider != "" {
		session, err := cli.DefaultSessionFile(*server, *provider)
		if err != nil {
			return err
		}
		return cli.Run(ctx, cli.Config{Server: *server, User: *user, OIDC: *provider, SessionFile: session, Device: *device, StateDir: state}, stdin, stdout)
	}
	if *user == "" && *token == "" {
		return fmt.Errorf("%w: --user NAME (or --token, or --oidc PROVIDER) is required", errUsage)
	}
	prompt := func() (string, error) {
		fmt.Fprintf(stdout, "password for %s: ", *user)
		if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return readPasswordOrStop(ctx, int(f.Fd()), stdout)
		}
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", err
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	return cli.Run(ctx, cli.Config{Server: *server, User: *user, Token: *token, Password: prompt, Device: *device, StateDir: state}, stdin, stdout)
}
