package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgechat/edgechat/bridge/region"
	"github.com/edgechat/edgechat/internal/ratelimit"
)

// linkCmd: edgechat link status [--server URL] [--data DIR | --token T]
func linkCmd(ctx context.Context, args []string, stdout io.Writer) error {
	const use = "edgechat link status [--server URL] [--data DIR | --token T]"
	if len(args) > 0 && isHelp(args[0]) {
		return commandHelp("link", nil)
	}
	if len(args) < 1 || args[0] != "status" {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	fs, server, data := adminFlags("link status")
	token := fs.String("token", envOr("EDGECHAT_TOKEN", ""), "an admin's access token (instead of --data)")
	if err := parseArgs(fs, args[1:]); err != nil {
		return err
	}
	var body []byte
	var err error
	if *token == "" {
		body, err = adminRequest(ctx, *server, *data, http.MethodGet, "/admin/links", nil)
	} else {
		body, err = tokenRequest(ctx, *server, *token, "/admin/links")
	}
	if err != nil {
		return fmt.Errorf("link status: %w", err)
	}
	return printLinkStatus(stdout, body)
}

// tokenRequest GETs an admin endpoint with the operator's own token.
func tokenRequest(ctx context.Context, server, token, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ratelimit.DoHTTP(&http.Client{Timeout: 60 * time.Second}, req, 0)
	if err != nil {
		return nil, fmt.Errorf("contacting %s: %w", server, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

func printLinkStatus(w io.Writer, body []byte) error {
	var st struct {
		Region string              `json:"region"`
		Links  []region.LinkStatus `json:"links"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if len(st.Links) == 0 {
		fmt.Fprintf(w, "region %s: no links\n", st.Region)
		return nil
	}
	fmt.Fprintf(w, "region %s\n", st.Region)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LINK\tSTATE\tBACKLOG\tOLDEST\tSENT\tRECEIVED\tEXPIRED\tURL")
	for _, l := range st.Links {
		oldest := "-"
		if l.Backlog > 0 {
			oldest = (time.Duration(l.OldestAgeSec * float64(time.Second))).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d msgs, %s\t%d msgs, %s\t%d\t%s\n", l.Name, l.State, l.Backlog, oldest,
			l.Sent.Messages, humanBytes(int64(l.Sent.Bytes)), l.Received.Messages, humanBytes(int64(l.Received.Bytes)), l.Expired, l.URL)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range st.Links {
		if l.Error != "" {
			fmt.Fprintf(w, "%s: cannot connect: %s\n", l.Name, l.Error)
		}
	}
	return nil
}
