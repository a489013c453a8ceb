// Command edgechat is the single binary of edgechat: `edgechat serve`
// runs a node; the other subcommands are tools for operators and users.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage marks a command line that could not be understood.
var errUsage = errors.New("usage")

const usage = `edgechat — real-time chat for the edge

Usage:
  edgechat serve [flags]                      run a node (see: edgechat serve --help)
  edgechat user add NAME --password-stdin     create an account on a running node
  edgechat user grant NAME admin [--revoke]   give (or take) the admin role on a running node
  edgechat token NAME [--data DIR] [--server URL]  mint NAME's access token (as login would) with the node's keys
  edgechat chat --server URL --user NAME      terminal chat client (or --token T)
  edgechat push test USER [--data DIR]        send a test notification to each of USER's devices, print each answer
  edgechat cluster status|leave|remove NODE   cluster members, leader, Raft indexes, lag; leave; remove a dead node
  edgechat backup --to DIR|s3://B/P [--data DIR | --token T]  write a consistent backup of the running cluster
  edgechat restore --from DIR|s3://B/P --data DIR  build the first node of a new cluster from a backup (checked first)
  edgechat archive status [--data DIR]        hot and sealed archive tiers of a running node (GET /admin/archive)
  edgechat link status [--data DIR | --token T]  each region link's state, backlog, oldest queued message, traffic (GET /admin/links)
  edgechat health [--url URL]                 exit 0 when the node answers /readyz (container health checks)
  edgechat version
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
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "edgechat: %v\n\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "edgechat: %v\n", err)
		return 1
	}
}
