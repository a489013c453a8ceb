package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgechat/edgechat/cluster"
)

// recoverCmd: edgechat recover --data DIR [--node-id ID]
//
// Makes the stopped node of DIR the only voter of its cluster, keeping
// every entry it holds (cluster.RecoverAlone): the way out for a cluster
// that lost its majority for good (docs/operations.md, "Losing the
// majority").
func recoverCmd(_ context.Context, args []string, stdout io.Writer) error {
	fset := flag.NewFlagSet("recover", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	data := fset.String("data", envOr("EDGECHAT_DATA", "./data"), "data directory of the stopped surviving node")
	nodeID := fset.String("node-id", "", "the node's ID (default: the one its data directory records)")
	if err := parseArgs(fset, args); err != nil {
		return err
	}
	id, err := dataNodeID(*data, *nodeID)
	if err != nil {
		return err
	}
	rec, err := cluster.RecoverAlone(*data, id, nil)
	if errors.Is(err, cluster.ErrDataDirLocked) {
		return fmt.Errorf("%w\nthe node is running: stop it first (recover rewrites its raft state, which only a stopped node allows)", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s, data %s\n", rec.Node, *data)
	fmt.Fprintf(stdout, "last configuration (index %d): %s\n", rec.OldIndex, cluster.FormatServers(rec.Old))
	fmt.Fprintf(stdout, "last entry: index %d, term %d (latest snapshot at %d)\n", rec.LastIndex, rec.LastTerm, rec.SnapshotIndex)
	if rec.Written == 0 {
		fmt.Fprintf(stdout, "%s already is the only voter of its cluster: nothing to do. Start it with `edgechat serve`.\n", rec.Node)
		return nil
	}
	var lost []string
	for _, s := range rec.Old {
		if string(s.ID) != rec.Node {
			lost = append(lost, string(s.ID))
		}
	}
	fmt.Fprintf(stdout, `recovered: %s is now the only voter (configuration written at index %d); every entry up to %d is kept.

Next:
  1. Start it as before (edgechat serve --data %s ...): it elects itself and commits at once,
     as a one-node cluster. Check with `+"`edgechat cluster status`"+`.
  2. Take a backup (edgechat backup --to ...).
  3. Grow the cluster again: new nodes with EMPTY data directories join it (--join, docs/operations.md "Growing").

Warnings:
  - Entries this node had that the lost majority had not committed are kept and now committed
    (at most the last few: messages their senders saw refused or unanswered may appear).
  - The lost nodes (%s) must NEVER start again with their old data: they would elect a leader among
    themselves and accept writes apart from this cluster. Wipe a lost node's data directory
    (or give it a new one) before it comes back; it then joins with --join like a new node.
`, rec.Node, rec.Written, rec.LastIndex, *data, strings.Join(lost, ", "))
	return nil
}

// dataNodeID is the node ID recorded in dir (node/node.go checkNodeID:
// the file node-id), checked against want when given.
func dataNodeID(dir, want string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "node-id"))
	switch {
	case errors.Is(err, fs.ErrNotExist) && want != "":
		return want, nil
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(filepath.Join(dir, "raft")); serr != nil {
			return "", fmt.Errorf("%w: %s has no raft state (no %s): is it a node's data directory?", cluster.ErrNoRaftState, dir,
				filepath.Join(dir, "raft"))
		}
		return "", fmt.Errorf("%w: %s records no node ID: give the node's --node-id", errUsage, dir)
	case err != nil:
		return "", err
	}
	had := strings.TrimSpace(string(b))
	if want != "" && want != had {
		return "", fmt.Errorf("%w: the data directory %s belongs to node %q, not %q", errUsage, dir, had, want)
	}
	return had, nil
}
