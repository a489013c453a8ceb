package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"
)

// keysCmd: edgechat keys list | rotate | revoke KID [--server URL] [--data DIR]
//
// The token-signing keys of the cluster: list them, give the node at
// --server a new key (the old one retires once its tokens have
// expired), or revoke a key at once everywhere (a leaked keys/
// directory: its tokens are refused and the sessions made with them
// closed; the node that signed with it makes a new key).
func keysCmd(ctx context.Context, args []string, stdout io.Writer) error {
	const use = "edgechat keys list | rotate | revoke KID [--server URL] [--data DIR]"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	sub, rest := args[0], args[1:]
	if isHelp(sub) {
		return commandHelp("keys", nil)
	}
	kid := ""
	if sub == "revoke" {
		kid, rest = positional(rest)
	}
	fs, server, data := adminFlags("keys " + sub)
	if err := parseArgs(fs, rest); err != nil {
		return err
	}
	if sub == "revoke" && kid == "" {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	switch sub {
	case "list":
		b, err := adminRequest(ctx, *server, *data, http.MethodGet, "/admin/keys", nil)
		if err != nil {
			return fmt.Errorf("listing signing keys: %w", err)
		}
		return printKeys(stdout, b)
	case "rotate":
		b, err := adminRequest(ctx, *server, *data, http.MethodPost, "/admin/keys/rotate", nil)
		if err != nil {
			return fmt.Errorf("rotating the signing key: %w", err)
		}
		var r struct {
			Kid, Retired string
			Until        time.Time
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("rotating the signing key: %w", err)
		}
		fmt.Fprintf(stdout, "the node signs with %s; %s verifies until %s\n", r.Kid, r.Retired, r.Until.Format(time.RFC3339))
		return nil
	case "revoke":
		if _, err := adminRequest(ctx, *server, *data, http.MethodPost, "/admin/keys/"+url.PathEscape(kid)+"/revoke", nil); err != nil {
			return fmt.Errorf("revoking %s: %w", kid, err)
		}
		fmt.Fprintf(stdout, "revoked %s: its tokens are refused on every node\n", kid)
		return nil
	}
	return fmt.Errorf("%w: %s", errUsage, use)
}

// printKeys prints GET /admin/keys as a table.
func printKeys(w io.Writer, body []byte) error {
	var v struct {
		Keys []struct {
			Kid         string     `json:"kid"`
			Current     bool       `json:"current"`
			PublishedAt *time.Time `json:"publishedAt"`
			Revoked     *struct {
				Until  time.Time `json:"until"`
				Reason string    `json:"reason"`
			} `json:"revoked"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("reading the key list: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATE\tPUBLISHED")
	for _, k := range v.Keys {
		state := "verifies"
		switch {
		case k.Revoked != nil && k.Revoked.Reason == "rotated" && time.Now().Before(k.Revoked.Until):
			state = "retiring until " + k.Revoked.Until.Format(time.RFC3339)
		case k.Revoked != nil && k.Revoked.Reason == "rotated":
			state = "retired"
		case k.Revoked != nil:
			state = k.Revoked.Reason
		case k.Current:
			state = "signs here"
		}
		published := "-"
		if k.PublishedAt != nil {
			published = k.PublishedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Kid, state, published)
	}
	return tw.Flush()
}
