// Command edgechat is the single binary of edgechat: `edgechat serve`
// runs a node; the other subcommands are tools for operators and users.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgechat/edgechat/internal/sysmon"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		// A node starts once more with the system monitor paced by its
		// work, not polling after each idle moment (internal/sysmon).
		if err := sysmon.Reexec(); err != nil {
			fmt.Fprintf(os.Stderr, "edgechat: going on with Go's default system monitor: %v\n", err)
		}
	}
	// A terminal that closes (SIGHUP) stops a command as SIGTERM does, a
	// node gracefully, rather than ending it on the spot; not when SIGHUP
	// is ignored (nohup): Notify would undo that.
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	ctx, stop := signal.NotifyContext(context.Background(), sigs...)
	done := make(chan int, 1)
	go func() { done <- run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr) }()
	select {
	case code := <-done:
		stop()
		os.Exit(code)
	case <-ctx.Done():
	}
	// A signal: the command stops gracefully. A second signal, now that
	// the default handling is back, ends the process at once; and a stop
	// that hangs (a node whose disk no longer writes: its database's reads
	// wait for a write that cannot finish) ends after stopTimeout. Nothing
	// acknowledged is lost either way: it is in the Raft log.
	stop()
	timeout := stopTimeout(os.Getenv("EDGECHAT_STOP_TIMEOUT"))
	select {
	case code := <-done:
		os.Exit(code)
	case <-time.After(timeout):
		fmt.Fprintf(os.Stderr, "edgechat: did not stop within %v of the signal (EDGECHAT_STOP_TIMEOUT); exiting now\n", timeout)
		os.Exit(1)
	}
}

// defaultStopTimeout bounds a graceful stop: a node stops in well under a
// second, and service managers kill later (systemd's TimeoutStopSec=60s
// in deploy/).
const defaultStopTimeout = 45 * time.Second

// minStopTimeout is the shortest EDGECHAT_STOP_TIMEOUT serve takes.
const minStopTimeout = time.Second

// stopTimeout reads EDGECHAT_STOP_TIMEOUT (a Go duration); empty or not a
// duration of at least minStopTimeout (serve refuses those at start):
// the default.
func stopTimeout(v string) time.Duration {
	if d, err := time.ParseDuration(v); err == nil && d >= minStopTimeout {
		return d
	}
	return defaultStopTimeout
}

// errUsage marks a command line that could not be understood.
var errUsage = errors.New("usage")

const usage = `edgechat — real-time chat for the edge

Usage:
  edgechat serve [flags]                      run a node (see: edgechat serve --help)
  edgechat user add NAME --password-stdin     create an account on a running node
  edgechat user grant NAME admin [--revoke]   give (or take) the admin role on a running node
  edgechat user passwd NAME --password-stdin  reset a password on a running node (signs the user out everywhere)
  edgechat user delete NAME --yes             delete an account (disabled now, erased after the grace period)
  edgechat user suspend NAME [--lift]         suspend an account (signed out, refused until lifted)
  edgechat user list [--suspended]            the accounts: role, state, sign-in, creation
  edgechat token NAME [--data DIR] [--server URL]  mint NAME's access token (as login would) with the node's keys
  edgechat keys list|rotate|revoke KID        the cluster's token-signing keys; rotate this node's; revoke one everywhere
  edgechat chat --server URL --user NAME      terminal chat client (or --token T)
  edgechat push test USER [--data DIR]        send a test notification to each of USER's devices, print each answer
  edgechat cluster status|leave|remove NODE   cluster members, leader, Raft indexes, lag; leave; remove a dead node
  edgechat backup --to DIR|s3://B/P [--data DIR | --token T]  write a consistent backup of the running cluster
  edgechat restore --from DIR|s3://B/P --data DIR [--config FILE]  build the first node of a new cluster from a backup (checked first)
  edgechat recover --data DIR                 make a stopped node the only voter of a cluster that lost its majority for good (keeps its log)
  edgechat archive status [--data DIR]        hot and sealed archive tiers of a running node (GET /admin/archive)
  edgechat link status [--data DIR | --token T]  each region link's state, backlog, oldest queued message, traffic (GET /admin/links)
  edgechat health [--url URL]                 exit 0 when the node answers /readyz (container health checks)
  edgechat version

edgechat COMMAND --help lists a command's flags.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stdout, stderr)
	case "user":
		err = userCmd(ctx, args[1:], stdin, stdout)
	case "token":
		err = tokenCmd(ctx, args[1:], stdout)
	case "keys":
		err = keysCmd(ctx, args[1:], stdout)
	case "chat":
		err = chatCmd(ctx, args[1:], stdin, stdout)
	case "cluster":
		err = clusterCmd(ctx, args[1:], stdout)
	case "push":
		err = pushCmd(ctx, args[1:], stdout)
	case "backup":
		err = backupCmd(ctx, args[1:], stdout)
	case "restore":
		err = restoreCmd(ctx, args[1:], stdout, stderr)
	case "recover":
		err = recoverCmd(ctx, args[1:], stdout)
	case "archive":
		err = archiveCmd(ctx, args[1:], stdout)
	case "link":
		err = linkCmd(ctx, args[1:], stdout)
	case "health":
		err = healthCmd(ctx, args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, "edgechat", version())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	var help *helpError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.text)
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "edgechat: %v\n\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "edgechat: %v\n", err)
		if untrustedCertificate(err) {
			fmt.Fprint(stderr, untrustedHint)
		}
		return 1
	}
}

// untrustedHint follows an error of a server certificate that this
// machine's roots do not vouch for (docs/operations.md, TLS).
const untrustedHint = "edgechat: the server's certificate is not trusted on this machine; for a self-signed certificate or a private CA, name its PEM file: SSL_CERT_FILE=ca.pem edgechat ...\n"

// untrustedCertificate reports whether err is a server certificate
// that failed verification for want of a trusted root.
func untrustedCertificate(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ua)
}
