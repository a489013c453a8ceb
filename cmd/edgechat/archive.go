package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// archiveCmd: edgechat archive status [--server URL] [--data DIR]
func archiveCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		return commandHelp("archive", nil)
	}
	if len(args) < 1 || args[0] != "status" {
		return fmt.Errorf("%w: edgechat archive status [--server URL] [--data DIR]", errUsage)
	}
	fs, server, data := adminFlags("archive status")
	if err := parseArgs(fs, args[1:]); err != nil {
		return err
	}
	b, err := adminRequest(ctx, *server, *data, http.MethodGet, "/admin/archive", nil)
	if err != nil {
		return fmt.Errorf("archive status: %w", err)
	}
	return printArchiveStatus(stdout, b)
}

func printArchiveStatus(w io.Writer, body []byte) error {
	var st map[string]any
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	num := func(k string) int64 { f, _ := st[k].(float64); return int64(f) }
	fmt.Fprintf(w, "hot (Badger tables on disk)  %s\n", humanBytes(num("hotBytes")))
	fmt.Fprintf(w, "sealed segments              %d (%d messages, %s) in the %v store\n",
		num("sealedSegments"), num("sealedMessages"), humanBytes(num("sealedBytes")), st["store"])
	if b, ok := st["backup"].(map[string]any); ok {
		out, _ := json.Marshal(b)
		fmt.Fprintf(w, "backup                       %s\n", out)
	}
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
