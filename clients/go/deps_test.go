package edgechat

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The SDK shares the server's module (see "The Go SDK" in
// docs/architecture.md), so nothing but these tests stops it from pulling
// the server into every application that imports it. Each list below is
// the whole allowance; growing one is a decision to write down in
// docs/architecture.md.

// sdkModules are the only third-party modules the SDK's (non-test) build
// may use.
var sdkModules = []string{
	"github.com/eclipse/paho.golang",
	"github.com/gorilla/websocket", // paho.golang's WebSocket dialer
	"golang.org/x/net",             // gorilla/websocket's proxy support
}

// sdkOwnPackages are the only packages of this module the SDK may use:
// itself and ground-floor packages that import nothing of ours.
var sdkOwnPackages = []string{
	"github.com/edgechat/edgechat/clients/go",
	"github.com/edgechat/edgechat/internal/address",
	"github.com/edgechat/edgechat/internal/snowflake",
	"github.com/edgechat/edgechat/internal/wire",
	"github.com/edgechat/edgechat/internal/wsnet",
}

// serverOnly names what must not reach the SDK even through its tests:
// `go mod tidy` in an application loads the tests of the packages it
// imports, so a test dependency here is a download for every app. The
// end-to-end tests against a real node live in clients/go/internal/e2e.
var serverOnly = []string{
	"github.com/hashicorp/raft",
	"github.com/hashicorp/raft-wal",
	"github.com/dgraph-io/badger",
	"github.com/edgechat/edgechat/broker",
	"github.com/edgechat/edgechat/cluster",
	"github.com/edgechat/edgechat/services",
	"github.com/edgechat/edgechat/node",
	"github.com/edgechat/edgechat/bridge",
	"github.com/edgechat/edgechat/cmd",
}

const ownModule = "github.com/edgechat/edgechat"

// listedPackage is one line of `go list -deps`.
type listedPackage struct{ path, module string }

// goListDeps lists the dependency closure of this package (with its tests
// when test is set), standard library left out.
func goListDeps(t *testing.T, test bool) []listedPackage {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH:", err)
	}
	args := []string{"list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}\t{{with .Module}}{{.Path}}{{end}}{{end}}"}
	if test {
		args = append(args, "-test")
	}
	out, err := exec.Command(goTool, append(args, ".")...).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += ": " + string(ee.Stderr)
		}
		t.Fatalf("go %s: %s", strings.Join(args, " "), msg)
	}
	var pkgs []listedPackage
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		path, module, _ := strings.Cut(line, "\t")
		// With -test, variants read "p [q.test]" and the test main "q.test".
		path, _, _ = strings.Cut(path, " ")
		if strings.HasSuffix(path, ".test") {
			continue
		}
		pkgs = append(pkgs, listedPackage{path, module})
	}
	return pkgs
}

// under reports whether path is prefix or a package below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// byModule groups package paths by module, in order of first appearance.
func byModule(pkgs []listedPackage) (order []string, paths map[string][]string) {
	paths = map[string][]string{}
	for _, p := range pkgs {
		if _, ok := paths[p.module]; !ok {
			order = append(order, p.module)
		}
		paths[p.module] = append(paths[p.module], p.path)
	}
	return order, paths
}

func TestSDKDependenciesStaySmall(t *testing.T) {
	pkgs := goListDeps(t, false)
	order, paths := byModule(pkgs)
	// Our own packages first: a server package is the likely root cause of
	// every other module on the list.
	slices.SortStableFunc(order, func(a, b string) int {
		return cmpBool(b == ownModule, a == ownModule)
	})
	thirdParty := 0
	for _, m := range order {
		switch {
		case m == ownModule:
			var bad []string
			for _, p := range paths[m] {
				if !slices.Contains(sdkOwnPackages, p) {
					bad = append(bad, p)
				}
			}
			if len(bad) > 0 {
				t.Errorf("the SDK imports these packages of the server's module: %s; only %s are allowed (an app importing the SDK must not build the server; see why with `go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./clients/go`)",
					strings.Join(bad, ", "), strings.Join(sdkOwnPackages, ", "))
			}
		case !slices.Contains(sdkModules, m):
			t.Errorf("the SDK's build needs module %s (%d package(s), e.g. %s), which is not in sdkModules; if it earns its place, add it there and to the SDK section of docs/architecture.md",
				m, len(paths[m]), paths[m][0])
		default:
			thirdParty++
		}
	}
	t.Logf("the SDK builds %d non-standard packages from %d third-party modules", len(pkgs), thirdParty)
}

func TestSDKTestsDoNotPullTheServer(t *testing.T) {
	var bad []string
	for _, p := range goListDeps(t, true) {
		if slices.ContainsFunc(serverOnly, func(prefix string) bool { return under(p.path, prefix) }) {
			bad = append(bad, p.path)
		}
	}
	if len(bad) > 0 {
		t.Errorf("the tests of clients/go depend on %d server packages (%s): `go mod tidy` in every app that imports the SDK would download them; put tests that need a node in clients/go/internal/e2e",
			len(bad), strings.Join(bad, ", "))
	}
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
