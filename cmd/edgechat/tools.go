package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/services/auth"
)

// userCmd: edgechat user add NAME --password-stdin [--server URL] [--display-name N],
// edgechat user grant NAME admin [--revoke] [--data DIR] [--server URL]
// edgechat user passwd NAME --password-stdin [--data DIR] [--server URL]
// edgechat user delete NAME --yes [--data DIR] [--server URL]
// edgechat user suspend NAME [--lift] [--data DIR] [--server URL]
// or edgechat user list [--suspended] [--data DIR] [--server URL]
func userCmd(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		return commandHelp("user", nil)
	}
	if len(args) >= 1 && args[0] == "list" {
		return listUsersCmd(ctx, args[1:], stdout)
	}
	var sub string
	if len(args) > 0 {
		sub = args[0]
	}
	name, rest := positional(args[min(len(args), 1):])
	switch sub {
	case "grant":
		role, rest := positional(rest)
		return grantCmd(ctx, name, role, rest, stdout)
	case "passwd":
		return passwdCmd(ctx, name, rest, stdin, stdout)
	case "delete":
		return deleteUserCmd(ctx, name, rest, stdout)
	case "suspend":
		return suspendCmd(ctx, name, rest, stdout)
	case "add":
		return addUserCmd(ctx, name, rest, stdin, stdout)
	}
	return fmt.Errorf("%w: edgechat user add NAME --password-stdin | edgechat user grant NAME admin | edgechat user passwd NAME --password-stdin | edgechat user delete NAME --yes | edgechat user suspend NAME [--lift] | edgechat user list [--suspended]", errUsage)
}

// addUserCmd creates an account (POST /auth/register).
func addUserCmd(ctx context.Context, name string, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("user add", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", envOr("EDGECHAT_SERVER", "http://127.0.0.1:8080"), "HTTP URL of a running node")
	fromStdin := fs.Bool("password-stdin", false, "read the password from standard input")
	display := fs.String("display-name", "", "display name (default: the user name)")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: edgechat user add NAME --password-stdin", errUsage)
	}
	if !*fromStdin {
		return fmt.Errorf("%w: --password-stdin is required (passwords never go on the command line)", errUsage)
	}
	password, err := readPassword(ctx, stdin, stdout)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"username": name, "password": password, "displayName": firstNonEmpty(*display, name)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*server, "/")+"/auth/register", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ratelimit.DoHTTP(&http.Client{Timeout: 30 * time.Second}, req, 0) // waits out 429s
	if err != nil {
		return fmt.Errorf("contacting %s: %w", *server, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("registering %s: %s: %s", name, resp.Status, strings.TrimSpace(string(rb)))
	}
	var out struct {
		UserID string `json:"userId"`
	}
	_ = json.Unmarshal(rb, &out)
	fmt.Fprintf(stdout, "created user %s\n", out.UserID)
	return nil
}

// userArg is the user ID of an account named on the command line
// (lower-cased, as accounts are): a usage error for a name that is no
// user ID, which must not reach a request's path ("x/../alice" is
// alice's path once cleaned).
func userArg(name string) (string, error) {
	uid := strings.ToLower(name)
	if wire.ValidUserID(uid) != nil {
		return "", fmt.Errorf("%w: %q is not a user name (3 to 32 of a-z, 0-9, '_', '.', '-', starting with a letter)", errUsage, name)
	}
	return uid, nil
}

// passwdCmd resets a user's password (an operator's reset: the user
// forgot theirs) and so signs them out everywhere.
func passwdCmd(ctx context.Context, name string, args []string, stdin io.Reader, stdout io.Writer) error {
	fs, server, data := adminFlags("user passwd")
	fromStdin := fs.Bool("password-stdin", false, "read the new password from standard input")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: edgechat user passwd NAME --password-stdin", errUsage)
	}
	if !*fromStdin {
		return fmt.Errorf("%w: --password-stdin is required (passwords never go on the command line)", errUsage)
	}
	password, err := readPassword(ctx, stdin, stdout)
	if err != nil {
		return err
	}
	uid, err := userArg(name)
	if err != nil {
		return err
	}
	rb, err := adminRequest(ctx, *server, *data, http.MethodPut, "/admin/users/"+uid+"/password", map[string]string{"password": password})
	if err != nil {
		return fmt.Errorf("resetting the password of %s: %w", uid, err)
	}
	var out struct {
		Revoked int `json:"revoked"`
	}
	_ = json.Unmarshal(rb, &out)
	fmt.Fprintf(stdout, "password of %s reset; %d sessions signed out\n", uid, out.Revoked)
	return nil
}

// deleteUserCmd deletes an account (an admin's deletion: disabled now,
// erased after the node's grace period). --yes confirms it.
func deleteUserCmd(ctx context.Context, name string, args []string, stdout io.Writer) error {
	fs, server, data := adminFlags("user delete")
	yes := fs.Bool("yes", false, "confirm: the account is disabled at once and erased after the grace period")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: edgechat user delete NAME --yes", errUsage)
	}
	if !*yes {
		return fmt.Errorf("deleting %s cannot be undone: add --yes", name)
	}
	uid, err := userArg(name)
	if err != nil {
		return err
	}
	rb, err := adminRequest(ctx, *server, *data, http.MethodDelete, "/admin/users/"+uid, nil)
	if err != nil {
		return fmt.Errorf("deleting %s: %w", uid, err)
	}
	var out struct {
		DeleteAt time.Time `json:"deleteAt"`
	}
	_ = json.Unmarshal(rb, &out)
	fmt.Fprintf(stdout, "deleted %s: signed out and disabled now, erased at %s\n", uid, out.DeleteAt.Format(time.RFC3339))
	return nil
}

// suspendCmd suspends an account (signed out, refused until lifted) or,
// with --lift, lifts its suspension.
func suspendCmd(ctx context.Context, name string, args []string, stdout io.Writer) error {
	return setUserFlag(ctx, name, args, stdout, userFlag{
		command: "user suspend", undo: "lift", undoUsage: "lift the suspension", field: "suspended", doing: "suspending",
		said: func(uid string, on bool) string {
			if on {
				return uid + " is suspended: signed out everywhere, refused until lifted"
			}
			return uid + " may sign in again"
		},
	})
}

// userFlag describes an account flag an admin sets with PUT
// /admin/users/{uid}/{field} {field: bool}: the admin role, a
// suspension.
type userFlag struct {
	command, undo, undoUsage, field, doing string
	said                                   func(uid string, on bool) string
}

// setUserFlag sets f on name, or clears it with --undo.
func setUserFlag(ctx context.Context, name string, args []string, stdout io.Writer, f userFlag) error {
	fs, server, data := adminFlags(f.command)
	undo := fs.Bool(f.undo, false, f.undoUsage)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: edgechat %s NAME", errUsage, f.command)
	}
	uid, err := userArg(name)
	if err != nil {
		return err
	}
	if _, err := adminRequest(ctx, *server, *data, http.MethodPut, "/admin/users/"+uid+"/"+f.field, map[string]bool{f.field: !*undo}); err != nil {
		return fmt.Errorf("%s %s: %w", f.doing, uid, err)
	}
	fmt.Fprintln(stdout, f.said(uid, !*undo))
	return nil
}

// listUsersCmd prints every account (or only the suspended ones), page
// by page.
func listUsersCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs, server, data := adminFlags("user list")
	suspended := fs.Bool("suspended", false, "only suspended accounts")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tROLE\tSTATE\tSIGN-IN\tCREATED")
	cursor := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		if *suspended {
			q.Set("suspended", "true")
		}
		rb, err := adminRequest(ctx, *server, *data, http.MethodGet, "/admin/users?"+q.Encode(), nil)
		if err != nil {
			return fmt.Errorf("listing accounts: %w", err)
		}
		var page struct {
			Users []struct {
				UserID    string    `json:"userId"`
				Admin     bool      `json:"admin"`
				Suspended bool      `json:"suspended"`
				Password  bool      `json:"password"`
				CreatedAt time.Time `json:"createdAt"`
			} `json:"users"`
			NextCursor string `json:"nextCursor"`
		}
		if err := json.Unmarshal(rb, &page); err != nil {
			return fmt.Errorf("listing accounts: %w", err)
		}
		for _, u := range page.Users {
			role, state, signIn := "user", "active", "provider"
			if u.Admin {
				role = "admin"
			}
			if u.Suspended {
				state = "suspended"
			}
			if u.Password {
				signIn = "password"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.UserID, role, state, signIn, u.CreatedAt.Format(time.RFC3339))
		}
		if page.NextCursor == "" {
			return tw.Flush()
		}
		cursor = page.NextCursor
	}
}

// grantCmd gives or takes the admin role.
func grantCmd(ctx context.Context, name, role string, args []string, stdout io.Writer) error {
	if role != "admin" && !slices.ContainsFunc(args, isHelp) {
		return fmt.Errorf("%w: edgechat user grant NAME admin (the only role is admin)", errUsage)
	}
	return setUserFlag(ctx, name, args, stdout, userFlag{
		command: "user grant", undo: "revoke", undoUsage: "take the role away", field: "admin", doing: "granting admin to",
		said: func(uid string, on bool) string {
			if on {
				return uid + " is now an admin"
			}
			return uid + " is no longer an admin"
		},
	})
}

// clusterCmd: edgechat cluster status | leave | remove NODE [--server URL] [--data DIR]
func clusterCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: edgechat cluster status|leave|remove NODE", errUsage)
	}
	sub, rest := args[0], args[1:]
	if isHelp(sub) {
		return commandHelp("cluster", nil)
	}
	var target string
	if sub == "remove" {
		target, rest = positional(rest)
	}
	fs, server, data := adminFlags("cluster " + sub)
	if err := parseArgs(fs, rest); err != nil {
		return err
	}
	if sub == "remove" && target == "" {
		return fmt.Errorf("%w: edgechat cluster remove NODE", errUsage)
	}
	switch sub {
	case "status":
		b, err := adminRequest(ctx, *server, *data, http.MethodGet, "/cluster/status", nil)
		if err != nil {
			return err
		}
		return printStatus(stdout, b)
	case "leave":
		if _, err := adminRequest(ctx, *server, *data, http.MethodPost, "/cluster/leave", nil); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "left the cluster; stop this node now")
		return nil
	case "remove":
		if _, err := adminRequest(ctx, *server, *data, http.MethodDelete, "/cluster/nodes/"+url.PathEscape(target), nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s from the cluster\n", target)
		return nil
	}
	return fmt.Errorf("%w: unknown cluster command %q", errUsage, sub)
}

// pushCmd: edgechat push test USER [--server URL] [--data DIR]
func pushCmd(ctx context.Context, args []string, stdout io.Writer) error {
	const use = "edgechat push test USER [--server URL] [--data DIR]"
	if len(args) > 0 && isHelp(args[0]) {
		return commandHelp("push", nil)
	}
	if len(args) < 1 || args[0] != "test" {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	name, rest := positional(args[1:])
	fs, server, data := adminFlags("push test")
	if err := parseArgs(fs, rest); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	uid, err := userArg(name)
	if err != nil {
		return err
	}
	b, err := adminRequest(ctx, *server, *data, http.MethodPost, "/admin/push/test/"+url.PathEscape(uid), nil)
	if err != nil {
		return fmt.Errorf("testing push to %s: %w", uid, err)
	}
	return printPushTest(stdout, uid, b)
}

func printPushTest(w io.Writer, uid string, body []byte) error {
	var ans struct {
		Results []struct {
			Device, Platform, Outcome, Reason string
			Status                            int
			Removed                           bool
		}
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if len(ans.Results) == 0 {
		fmt.Fprintf(w, "%s has no push devices\n", uid)
		return nil
	}
	fmt.Fprintf(w, "%-24s %-8s %-10s %-6s %s\n", "DEVICE", "PLATFORM", "OUTCOME", "STATUS", "REASON")
	for _, r := range ans.Results {
		reason := r.Reason
		if reason == "" {
			reason = "-"
		}
		if r.Removed {
			reason += " (registration removed)"
		}
		fmt.Fprintf(w, "%-24s %-8s %-10s %-6d %s\n", r.Device, r.Platform, r.Outcome, r.Status, reason)
	}
	return nil
}

func printStatus(w io.Writer, body []byte) error {
	var st struct {
		Node, State, Leader                        string
		Term, LastIndex, CommitIndex, AppliedIndex uint64
		FeatureLevel                               uint32
		Members                                    []struct {
			Name, ClusterAddr, Suffrage string
			Leader, Down                bool
			Lag                         int64
		}
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("reading status: %w", err)
	}
	fmt.Fprintf(w, "node %s: %s, leader %s, term %d, last %d, commit %d, applied %d, feature level %d\n",
		st.Node, st.State, st.Leader, st.Term, st.LastIndex, st.CommitIndex, st.AppliedIndex, st.FeatureLevel)
	fmt.Fprintf(w, "%-12s %-24s %-9s %-6s %s\n", "MEMBER", "ADDRESS", "SUFFRAGE", "LEADER", "LAG")
	for _, m := range st.Members {
		lag := "?"
		if m.Lag >= 0 {
			lag = fmt.Sprint(m.Lag)
		}
		if m.Down {
			// Marked down by the leader (or this node, cut off): still
			// a member; presence homes moved off it.
			lag += "  down"
		}
		fmt.Fprintf(w, "%-12s %-24s %-9s %-6v %s\n", m.Name, m.ClusterAddr, m.Suffrage, m.Leader, lag)
	}
	return nil
}

// parseArgs parses a command's flags and refuses any word left over.
// Go's flag parsing stops at the first word that is not a flag, so the
// word and every flag after it would be ignored: a second user name, a
// "revoke" meant as --revoke, a --server written after it falling back
// to its default node.
func parseArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return commandHelp(fs.Name(), fs)
	} else if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected arguments %q", errUsage, fs.Name(), fs.Args())
	}
	return nil
}

func adminFlags(name string) (fs *flag.FlagSet, server, data *string) {
	fs = flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server = fs.String("server", envOr("EDGECHAT_SERVER", "http://127.0.0.1:8080"), "HTTP URL of a running node")
	data = fs.String("data", envOr("EDGECHAT_DATA", "./data"), "data directory of the node (for its signing key)")
	return fs, server, data
}

// adminRequest calls an admin endpoint with a five-minute admin token
// signed by the node's own key (the operator has the data directory).
func adminRequest(ctx context.Context, server, data, method, path string, body any) ([]byte, error) {
	tok, err := mintOperator(data, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(server, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	// Operators' scripts poll (cluster status): wait out the node's rate
	// limit rather than fail on a 429.
	resp, err := ratelimit.DoHTTP(&http.Client{Timeout: 60 * time.Second}, req, 0)
	if err != nil {
		return nil, fmt.Errorf("contacting %s: %w", server, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(rb)))
	}
	return rb, nil
}

// mintOperator mints an admin token for "operator" with the node's key
// (the operator has the data directory).
func mintOperator(data string, ttl time.Duration) (string, error) {
	tok, err := auth.MintFromKeyDir(filepath.Join(data, "keys"), auth.DefaultIssuer, auth.Account{UserID: "operator", Admin: true}, ttl)
	if errors.Is(err, os.ErrNotExist) {
		// The usual cause: the node runs with another --data than the
		// default ./data, or on another machine.
		return "", fmt.Errorf("no signing key in %s: give the node's data directory with --data DIR (or EDGECHAT_DATA), on the node's machine: %w", data, err)
	}
	return tok, err
}

// tokenCmd: edgechat token NAME [--server URL] [--data DIR] [--ttl D]
//
// The token carries the claims a login token of NAME carries (its admin
// role included): the running node reports the account (GET
// /admin/users/NAME, with a short operator token) and auth.MintFromKeyDir
// mints from it with the node's key, as login does.
func tokenCmd(ctx context.Context, args []string, stdout io.Writer) error {
	name, rest := positional(args)
	fs, server, data := adminFlags("token")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	if err := parseArgs(fs, rest); err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: edgechat token NAME [--server URL] [--data DIR] [--ttl D]", errUsage)
	}
	if _, err := userArg(name); err != nil {
		return err
	}
	if *ttl <= 0 {
		return fmt.Errorf("%w: --ttl %v: the token's lifetime must be positive (1h, 15m)", errUsage, *ttl)
	}
	b, err := adminRequest(ctx, *server, *data, http.MethodGet, "/admin/users/"+url.PathEscape(strings.ToLower(name)), nil)
	if err != nil {
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	var acct auth.Account
	if err := json.Unmarshal(b, &acct); err != nil || acct.UserID == "" {
		return fmt.Errorf("looking up %s: unexpected answer %q", name, b)
	}
	tok, err := auth.MintFromKeyDir(filepath.Join(*data, "keys"), auth.DefaultIssuer, acct, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// healthCmd: edgechat health [--url URL]. It lets a distroless image (no
// shell, no curl) have a container health check. Without --url (or
// EDGECHAT_HEALTH_URL) it asks /readyz of the node its environment
// configures (healthTarget), as the container's health check runs in the
// node's own environment.
func healthCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("url", os.Getenv("EDGECHAT_HEALTH_URL"), "URL to check (default: this environment's node)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	client := http.DefaultClient
	if *url == "" {
		var err error
		if *url, client, err = healthTarget(os.Environ()); err != nil {
			return fmt.Errorf("unhealthy: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s answered %s", *url, resp.Status)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

// healthTarget is /readyz of the node that environ configures for
// `edgechat serve` (EDGECHAT_HTTP_ADDR, EDGECHAT_TLS_CERT, the file
// EDGECHAT_CONFIG names): its HTTP port on 127.0.0.1 (or the address it
// binds), over TLS when it has a certificate. A certificate names the
// node's public host, not 127.0.0.1, so the client checks instead that
// the server presents exactly that certificate. An environment that does
// not load (a malformed value) asks http://127.0.0.1:8080/readyz.
func healthTarget(environ []string) (string, *http.Client, error) {
	const fallback = "http://127.0.0.1:8080/readyz"
	cfg, err := node.LoadSettings(nil, environ) // not validated: serve's flags are not seen here
	if err != nil {
		return fallback, http.DefaultClient, nil
	}
	host, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		return fallback, http.DefaultClient, nil
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	if cfg.TLSCert == "" {
		return "http://" + net.JoinHostPort(host, port) + "/readyz", http.DefaultClient, nil
	}
	pair, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil || len(pair.Certificate) == 0 {
		return "", nil, fmt.Errorf("reading the node's certificate: %v", err)
	}
	want := pair.Certificate[0]
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the check that it is our own certificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], want) {
				return errors.New("the server does not present this node's certificate (--tls-cert)")
			}
			return nil
		},
	}
	return "https://" + net.JoinHostPort(host, port) + "/readyz", &http.Client{Transport: tr}, nil
}
