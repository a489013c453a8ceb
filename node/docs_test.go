package node_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The docs are part of the contract: every HTTP route a node serves and
// every error code the HTTP API returns is in docs/protocol.md, and every
// flag of `edgechat serve` in docs/operations.md, so that they cannot
// drift from the code unnoticed.

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../docs/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wildcard matches a ServeMux wildcard ({uid}, {path...}); docs may name
// it differently from the code.
var wildcard = regexp.MustCompile(`\{[^}/]*\}`)

// documentedRoute reports whether doc mentions pattern ("GET /user/{uid}"
// or a raw "/mqtt") as code: "GET /user/{x}" followed by the end of the
// path (a space, "?", "`", ...); a pattern ending in "/" (a subtree) may
// be written with anything after it ("GET /debug/pprof/…").
func documentedRoute(doc, pattern string) bool {
	pattern = wildcard.ReplaceAllString(pattern, "{}")
	if !strings.Contains(pattern, " ") { // raw handler: the bare path in backquotes
		return strings.Contains(doc, "`"+pattern+"`")
	}
	re := regexp.QuoteMeta(pattern)
	if !strings.HasSuffix(pattern, "/") {
		re += `(?:$|[^A-Za-z0-9_./{}-])`
	}
	return regexp.MustCompile(re).MatchString(doc)
}

func TestEveryRouteIsInProtocolDoc(t *testing.T) {
	// With an OIDC provider configured, so that its routes are served too
	// (the provider need not answer: discovery is retried in the background).
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.OIDCIssuer, c.OIDCClientID = "https://127.0.0.1:1/realms/none", "edgechat"
	}))
	patterns := n.Gateway.Patterns()
	if !slices.Contains(patterns, "GET /auth/oidc/{provider}/start") {
		t.Fatalf("no OIDC routes among %q", patterns)
	}
	if len(patterns) < 10 {
		t.Fatalf("the gateway lists only %d routes: %q", len(patterns), patterns)
	}
	doc := wildcard.ReplaceAllString(readDoc(t, "protocol.md"), "{}")
	var missing []string
	for _, p := range patterns {
		if !documentedRoute(doc, p) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Errorf("docs/protocol.md does not document these %d of the %d routes the gateway serves (write each as `METHOD /path` in its section):\n\t%s",
			len(missing), len(patterns), strings.Join(missing, "\n\t"))
	}
}

// errorCodes finds the HTTP error codes declared in the Go files (tests
// excluded) under the given directories: string constants named Code...,
// the convention of internal/httpapi and the services. It maps each code
// to where it is declared.
func errorCodes(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	codes := map[string]string{}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			for _, decl := range f.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, name := range vs.Names {
						if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
							continue
						}
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							v, _ := strconv.Unquote(lit.Value)
							codes[v] = path + ": " + name.Name
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return codes
}

func TestEveryErrorCodeIsInProtocolDoc(t *testing.T) {
	codes := errorCodes(t, "../internal/httpapi", "../services")
	if len(codes) < 20 {
		t.Fatalf("found only %d error codes: %v", len(codes), codes)
	}
	doc := readDoc(t, "protocol.md")
	var missing []string
	for code, where := range codes {
		if !strings.Contains(doc, "`"+code+"`") {
			missing = append(missing, code+" ("+where+")")
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Errorf("docs/protocol.md does not list these %d of the %d HTTP error codes (add each, with its status, to the error code table under HTTP API):\n\t%s",
			len(missing), len(codes), strings.Join(missing, "\n\t"))
	}
}

func TestEveryServeFlagIsInOperationsDoc(t *testing.T) {
	flags := node.FlagNames()
	if len(flags) < 10 {
		t.Fatalf("node.FlagNames lists only %d flags: %q", len(flags), flags)
	}
	doc := readDoc(t, "operations.md")
	var missing []string
	for _, f := range flags {
		if !regexp.MustCompile(`--` + regexp.QuoteMeta(f) + `(?:$|[^a-z0-9-])`).MatchString(doc) {
			missing = append(missing, "--"+f)
		}
	}
	if len(missing) > 0 {
		t.Errorf("docs/operations.md does not mention these %d of the %d flags of `edgechat serve`:\n\t%s",
			len(missing), len(flags), strings.Join(missing, "\n\t"))
	}
}

func TestDocumentedRouteMatching(t *testing.T) {
	doc := "| `GET /user/{uid}` | x |\n`GET /user/me?x=1`, `GET /debug/pprof/…` and `/mqtt`; GET /chat/history"
	for p, want := range map[string]bool{
		"GET /user/{id}":        true, // another wildcard name
		"GET /user/me":          true, // followed by a query
		"GET /debug/pprof/":     true, // subtree
		"/mqtt":                 true,
		"GET /chat/history":     true,  // at the end
		"GET /user":             false, // only a prefix of a documented path
		"POST /user/{uid}":      false, // another method
		"/debug":                false,
		"GET /user/{uid}/items": false,
	} {
		if got := documentedRoute(wildcard.ReplaceAllString(doc, "{}"), p); got != want {
			t.Errorf("documentedRoute(%q) = %v, want %v", p, got, want)
		}
	}
}
