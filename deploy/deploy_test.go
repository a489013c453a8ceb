package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node"
)

// ---- Kubernetes -----------------------------------------------------------

type k8sObjects struct {
	all      []map[string]any
	byKind   map[string][]map[string]any
	fileOf   map[string]string // kind/name -> file
	manifest []string          // file names, sorted
}

func loadK8s(t *testing.T) k8sObjects {
	t.Helper()
	files, err := filepath.Glob(deployFile("k8s/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in k8s/: %v", err)
	}
	o := k8sObjects{byKind: map[string][]map[string]any{}, fileOf: map[string]string{}}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		o.manifest = append(o.manifest, filepath.Base(f))
		for _, d := range readYAML(t, f) {
			kind, name := getString(d, "kind"), getString(d, "metadata", "name")
			if kind == "" || name == "" || getString(d, "apiVersion") == "" {
				t.Fatalf("%s: object without apiVersion, kind or metadata.name", f)
			}
			if ns := getString(d, "metadata", "namespace"); ns != "" {
				t.Errorf("%s: %s/%s sets namespace %q; the manifests are namespace-agnostic", f, kind, name, ns)
			}
			o.all = append(o.all, d)
			o.byKind[kind] = append(o.byKind[kind], d)
			o.fileOf[kind+"/"+name] = filepath.Base(f)
		}
	}
	sort.Strings(o.manifest)
	return o
}

func (o k8sObjects) one(t *testing.T, kind string) map[string]any {
	t.Helper()
	if len(o.byKind[kind]) != 1 {
		t.Fatalf("want exactly one %s, have %d", kind, len(o.byKind[kind]))
	}
	return o.byKind[kind][0]
}

// services splits the Services into the headless one and the public ones.
func (o k8sObjects) services(t *testing.T) (headless map[string]any, lb []map[string]any) {
	t.Helper()
	for _, s := range o.byKind["Service"] {
		switch {
		case getString(s, "spec", "clusterIP") == "None":
			if headless != nil {
				t.Fatal("more than one headless Service")
			}
			headless = s
		case getString(s, "spec", "type") == "LoadBalancer":
			lb = append(lb, s)
		}
	}
	if headless == nil || len(lb) == 0 {
		t.Fatalf("want a headless Service and a LoadBalancer Service")
	}
	return headless, lb
}

func toInt(t *testing.T, v any, what string) int {
	t.Helper()
	switch n := v.(type) {
	case int:
		return n
	case string:
		// Kubernetes accepts int-or-string here, e.g. "1" or "50%".
		i, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("%s: %q is not a number (percentages are not allowed here)", what, n)
		}
		return i
	}
	t.Fatalf("%s: %v (%T) is not a number", what, v, v)
	return 0
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	o := loadK8s(t)
	k := readYAML(t, deployFile("k8s/kustomization.yaml"))
	var res []string
	for _, r := range getList(k[0], "resources") {
		res = append(res, r.(string))
	}
	sort.Strings(res)
	if !slices.Equal(res, o.manifest) {
		t.Errorf("kustomization resources %v, manifests in k8s/ %v", res, o.manifest)
	}
}

func TestStatefulSet(t *testing.T) {
	o := loadK8s(t)
	sts := o.one(t, "StatefulSet")
	headless, _ := o.services(t)
	stsName := getString(sts, "metadata", "name")
	svcName := getString(headless, "metadata", "name")

	replicas := toInt(t, get(sts, "spec", "replicas"), "replicas")
	if replicas < 3 || replicas%2 == 0 {
		t.Errorf("replicas = %d; want an odd number ≥ 3 (a Raft majority survives one loss)", replicas)
	}
	if p := getString(sts, "spec", "podManagementPolicy"); p != "Parallel" {
		t.Errorf("podManagementPolicy = %q; want Parallel (pods cannot be ready before the cluster forms)", p)
	}
	if s := getString(sts, "spec", "serviceName"); s != svcName {
		t.Errorf("serviceName = %q; want the headless Service %q", s, svcName)
	}
	podLabels := stringMap(getMap(sts, "spec", "template", "metadata", "labels"))
	if sel := stringMap(getMap(sts, "spec", "selector", "matchLabels")); !subset(sel, podLabels) {
		t.Errorf("StatefulSet selector %v does not match its pod labels %v", sel, podLabels)
	}

	pod := getMap(sts, "spec", "template", "spec")
	containers := getList(pod, "containers")
	if len(containers) != 1 {
		t.Fatalf("want one container, have %d", len(containers))
	}
	c := containers[0].(map[string]any)

	// Persistent data: a claim template mounted at the data directory.
	vcts := getList(sts, "spec", "volumeClaimTemplates")
	if len(vcts) == 0 {
		t.Fatal("no volumeClaimTemplates: node data would not survive rescheduling")
	}
	claims := map[string]bool{}
	for _, v := range vcts {
		claims[getString(v, "metadata", "name")] = true
		if s := getString(v, "spec", "resources", "requests", "storage"); s == "" {
			t.Errorf("volumeClaimTemplate %v requests no storage", getString(v, "metadata", "name"))
		}
	}
	mounted := false
	for _, m := range getList(c, "volumeMounts") {
		if getString(m, "mountPath") == dataDir && claims[getString(m, "name")] {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("no volumeClaimTemplate mounted at %s", dataDir)
	}

	// Environment: the node ID comes from the pod name.
	env := map[string]string{}
	fieldRefs := map[string]string{}
	for _, e := range getList(c, "env") {
		name := getString(e, "name")
		if fp := getString(e, "valueFrom", "fieldRef", "fieldPath"); fp != "" {
			fieldRefs[name] = fp
			continue
		}
		env[name] = getString(e, "value")
	}
	nodeID := "<unset>"
	if fieldRefs["EDGECHAT_NODE_ID"] == "metadata.name" {
		nodeID = "direct"
	} else if m := regexp.MustCompile(`^\$\((\w+)\)$`).FindStringSubmatch(env["EDGECHAT_NODE_ID"]); m != nil && fieldRefs[m[1]] == "metadata.name" {
		nodeID = m[1]
	}
	if nodeID == "<unset>" {
		t.Fatalf("EDGECHAT_NODE_ID must come from the pod name (fieldRef metadata.name); env %v, fieldRefs %v", env, fieldRefs)
	}

	// Args: substitute $(VAR) as the kubelet does, for pod 0.
	pod0 := stsName + "-0"
	expand := func(s string) string {
		return regexp.MustCompile(`\$\((\w+)\)`).ReplaceAllStringFunc(s, func(ref string) string {
			name := ref[2 : len(ref)-1]
			if fieldRefs[name] == "metadata.name" {
				return pod0
			}
			if v, ok := env[name]; ok {
				return v
			}
			t.Errorf("args/env reference $(%s), which is not defined before", name)
			return ref
		})
	}
	if len(getList(c, "command")) != 0 {
		t.Error("container overrides the image's ENTRYPOINT (edgechat serve); use args")
	}
	inv := invocation{where: "k8s/statefulset.yaml", env: map[string]string{}, files: map[string]string{}}
	for _, a := range getList(c, "args") {
		inv.args = append(inv.args, expand(a.(string)))
	}
	for k, v := range env {
		inv.env[k] = expand(v)
	}

	// The ConfigMap mounted for --config is a valid configuration.
	configPath := inv.flagValue(t, "config")
	if configPath == "" {
		t.Fatal("no --config: the ConfigMap is not used")
	}
	inv.files[configPath] = configMapFile(t, o, pod, c, configPath)

	cfg := checkInvocation(t, inv)
	if cfg.NodeID != pod0 {
		t.Errorf("node ID of pod 0 = %q; want %q", cfg.NodeID, pod0)
	}
	if cfg.DataDir != dataDir {
		t.Errorf("data directory %q; the volume is mounted at %s", cfg.DataDir, dataDir)
	}
	clusterPort := portOf(cfg.ClusterAddr)

	// Cluster formation: expect every replica, join their stable names.
	if be := inv.flagValue(t, "bootstrap-expect"); be != strconv.Itoa(replicas) {
		t.Errorf("--bootstrap-expect = %q; want the replica count %d", be, replicas)
	}
	join := strings.Split(inv.flagValue(t, "join"), ",")
	for i := range replicas {
		want := stsName + "-" + strconv.Itoa(i) + "." + svcName + ":" + clusterPort
		if !slices.Contains(join, want) {
			t.Errorf("--join %v lacks %s", join, want)
		}
	}
	if adv := inv.flagValue(t, "advertise-cluster"); adv != pod0+"."+svcName+":"+clusterPort {
		t.Errorf("--advertise-cluster for pod 0 = %q; want %s.%s:%s", adv, pod0, svcName, clusterPort)
	}

	// Probes.
	ports := containerPorts(c)
	httpPort := portOf(cfg.HTTPAddr)
	for _, p := range []struct{ probe, path string }{{"readinessProbe", "/readyz"}, {"livenessProbe", "/healthz"}} {
		if got := getString(c, p.probe, "httpGet", "path"); got != p.path {
			t.Errorf("%s path = %q; want %s", p.probe, got, p.path)
		}
		if got := resolvePort(get(c, p.probe, "httpGet", "port"), ports); got != httpPort {
			t.Errorf("%s port = %v; want the HTTP port %s", p.probe, get(c, p.probe, "httpGet", "port"), httpPort)
		}
	}
	for name, want := range map[string]string{"mqtt": portOf(cfg.MQTTAddr), "http": httpPort, "cluster": clusterPort} {
		if got := strconv.Itoa(ports[name]); got != want {
			t.Errorf("containerPort %s = %s; the node listens on %s", name, got, want)
		}
	}

	// Security and resources.
	if get(pod, "securityContext", "runAsNonRoot") != true && get(c, "securityContext", "runAsNonRoot") != true {
		t.Error("runAsNonRoot is not true")
	}
	if get(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if get(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if getMap(c, "resources", "requests") == nil || getString(c, "resources", "limits", "memory") == "" {
		t.Error("resources: want requests and a memory limit")
	}
}

// configMapFile finds the ConfigMap key mounted at path, writes it to a
// temporary file and returns that file.
func configMapFile(t *testing.T, o k8sObjects, pod, c map[string]any, path string) string {
	t.Helper()
	for _, m := range getList(c, "volumeMounts") {
		mp := getString(m, "mountPath")
		if !strings.HasPrefix(path, mp+"/") {
			continue
		}
		for _, v := range getList(pod, "volumes") {
			if getString(v, "name") != getString(m, "name") {
				continue
			}
			cmName := getString(v, "configMap", "name")
			for _, cm := range o.byKind["ConfigMap"] {
				if getString(cm, "metadata", "name") != cmName {
					continue
				}
				data, ok := getMap(cm, "data")[strings.TrimPrefix(path, mp+"/")].(string)
				if !ok {
					t.Fatalf("ConfigMap %s has no key for %s", cmName, path)
				}
				f := filepath.Join(t.TempDir(), "edgechat.yaml")
				if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
				return f
			}
			t.Fatalf("volume %s refers to ConfigMap %q, which is not in k8s/", getString(v, "name"), cmName)
		}
	}
	t.Fatalf("--config %s is not in a mounted ConfigMap", path)
	return ""
}

func containerPorts(c map[string]any) map[string]int {
	ports := map[string]int{}
	for _, p := range getList(c, "ports") {
		n, _ := get(p, "containerPort").(int)
		ports[getString(p, "name")] = n
	}
	return ports
}

// resolvePort turns a port number or a named container port into a string.
func resolvePort(v any, named map[string]int) string {
	switch p := v.(type) {
	case int:
		return strconv.Itoa(p)
	case string:
		if n, ok := named[p]; ok {
			return strconv.Itoa(n)
		}
	}
	return ""
}

// portOf returns the port of a listen address such as ":8080".
func portOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

func TestServices(t *testing.T) {
	o := loadK8s(t)
	sts := o.one(t, "StatefulSet")
	podLabels := stringMap(getMap(sts, "spec", "template", "metadata", "labels"))
	c := getList(sts, "spec", "template", "spec", "containers")[0].(map[string]any)
	ports := containerPorts(c)
	headless, lbs := o.services(t)

	if get(headless, "spec", "publishNotReadyAddresses") != true {
		t.Error("headless Service: publishNotReadyAddresses must be true (peers must find each other before they are ready)")
	}
	if !subset(stringMap(getMap(headless, "spec", "selector")), podLabels) {
		t.Errorf("headless Service selector does not match the pods %v", podLabels)
	}
	var raft bool
	for _, p := range getList(headless, "spec", "ports") {
		if get(p, "port") == 7946 && resolvePort(get(p, "targetPort"), ports) == "7946" {
			raft = true
		}
	}
	if !raft {
		t.Error("headless Service does not expose the cluster port 7946")
	}

	exposed := map[int]bool{}
	for _, lb := range lbs {
		name := getString(lb, "metadata", "name")
		if a := getString(lb, "spec", "sessionAffinity"); a != "ClientIP" {
			t.Errorf("Service %s: sessionAffinity = %q; want ClientIP (MQTT sessions, WebSockets)", name, a)
		}
		if p := getString(lb, "spec", "externalTrafficPolicy"); p != "Local" {
			t.Errorf("Service %s: externalTrafficPolicy = %q; want Local (keeps client IPs)", name, p)
		}
		if get(lb, "spec", "publishNotReadyAddresses") == true {
			t.Errorf("Service %s sends clients to pods that are not ready", name)
		}
		if !subset(stringMap(getMap(lb, "spec", "selector")), podLabels) {
			t.Errorf("Service %s: selector %v does not match the pod labels %v", name, getMap(lb, "spec", "selector"), podLabels)
		}
		for _, p := range getList(lb, "spec", "ports") {
			port, _ := get(p, "port").(int)
			target := resolvePort(get(p, "targetPort"), ports)
			if target == "" {
				t.Errorf("Service %s: port %d targets %v, which is no container port", name, port, get(p, "targetPort"))
			}
			exposed[port] = true
		}
	}
	for _, p := range []int{1883, 8080} {
		if !exposed[p] {
			t.Errorf("no LoadBalancer Service exposes port %d", p)
		}
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	o := loadK8s(t)
	sts := o.one(t, "StatefulSet")
	pdb := o.one(t, "PodDisruptionBudget")
	replicas := toInt(t, get(sts, "spec", "replicas"), "replicas")
	majority := replicas/2 + 1
	podLabels := stringMap(getMap(sts, "spec", "template", "metadata", "labels"))
	if sel := stringMap(getMap(pdb, "spec", "selector", "matchLabels")); !subset(sel, podLabels) {
		t.Errorf("PDB selector %v does not select the pods %v", sel, podLabels)
	}
	mu, hasMU := getMap(pdb, "spec")["maxUnavailable"]
	ma, hasMA := getMap(pdb, "spec")["minAvailable"]
	switch {
	case hasMU == hasMA:
		t.Fatal("PDB: set exactly one of maxUnavailable and minAvailable")
	case hasMU:
		if n := toInt(t, mu, "maxUnavailable"); n < 1 || replicas-n < majority {
			t.Errorf("PDB maxUnavailable = %d: %d replicas must keep a majority of %d and allow drains", n, replicas, majority)
		}
	default:
		if n := toInt(t, ma, "minAvailable"); n < majority || n >= replicas {
			t.Errorf("PDB minAvailable = %d: want a majority (≥ %d) and < %d so drains can proceed", n, majority, replicas)
		}
	}
}

// ---- compose --------------------------------------------------------------

// composeVar expands ${VAR:-default} as compose does with VAR unset.
var composeVar = regexp.MustCompile(`\$\{(\w+)(?::?-([^}]*))?\}`)

func composeExpand(s string) string {
	return composeVar.ReplaceAllString(s, "$2")
}

func TestCompose(t *testing.T) {
	docs := readYAML(t, deployFile("compose.yaml"))
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: %d documents", len(docs))
	}
	services := getMap(docs[0], "services")
	declared := getMap(docs[0], "volumes")

	type edgeNode struct {
		service string
		inv     invocation
		cfg     node.Config
	}
	var nodes []edgeNode
	for name, s := range services {
		if getString(s, "build", "dockerfile") != "deploy/Dockerfile" && !strings.HasPrefix(getString(s, "image"), "edgechat") {
			continue
		}
		// The container starts with the image's ENV, then the service's.
		inv := invocation{where: "compose.yaml service " + name, env: imageEnv(t)}
		if len(getList(s, "entrypoint")) != 0 {
			t.Errorf("%s overrides the image's ENTRYPOINT (edgechat serve)", inv.where)
		}
		for _, a := range getList(s, "command") {
			inv.args = append(inv.args, composeExpand(a.(string)))
		}
		for k, v := range getMap(s, "environment") {
			inv.env[k] = composeExpand(v.(string))
		}
		nodes = append(nodes, edgeNode{service: name, inv: inv, cfg: checkInvocation(t, inv)})
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].service < nodes[j].service })
	if len(nodes) != 3 {
		t.Fatalf("want 3 edgechat services, have %d", len(nodes))
	}

	ids, vols := map[string]string{}, map[string]string{}
	for _, n := range nodes {
		s := services[n.service]
		if prev, dup := ids[n.cfg.NodeID]; dup {
			t.Errorf("services %s and %s share node ID %q", prev, n.service, n.cfg.NodeID)
		}
		ids[n.cfg.NodeID] = n.service
		if n.cfg.DataDir != dataDir {
			t.Errorf("%s: data directory %q; want %s (the image's volume)", n.service, n.cfg.DataDir, dataDir)
		}
		var vol string
		for _, v := range getList(s, "volumes") {
			src, dst, _ := strings.Cut(v.(string), ":")
			if strings.TrimSuffix(dst, ":rw") == dataDir {
				vol = src
			}
		}
		if _, ok := declared[vol]; !ok {
			t.Errorf("%s: %s is not on a named volume (have %q)", n.service, dataDir, vol)
		}
		if prev, dup := vols[vol]; dup {
			t.Errorf("services %s and %s share volume %q", prev, n.service, vol)
		}
		vols[vol] = n.service

		if be := n.inv.flagValue(t, "bootstrap-expect"); be != strconv.Itoa(len(nodes)) {
			t.Errorf("%s: --bootstrap-expect = %q; want %d", n.service, be, len(nodes))
		}
		port := portOf(n.cfg.ClusterAddr)
		if adv := n.inv.flagValue(t, "advertise-cluster"); adv != n.service+":"+port {
			t.Errorf("%s: --advertise-cluster = %q; want %s:%s", n.service, adv, n.service, port)
		}
		var want []string
		for _, o := range nodes {
			if o.service != n.service {
				want = append(want, o.service+":"+portOf(o.cfg.ClusterAddr))
			}
		}
		join := strings.Split(n.inv.flagValue(t, "join"), ",")
		sort.Strings(join)
		if !slices.Equal(join, want) {
			t.Errorf("%s: --join %v; want the others %v", n.service, join, want)
		}
		for _, f := range []string{"advertise-mqtt", "advertise-ws"} {
			if n.inv.flagValue(t, f) == "" {
				t.Errorf("%s: no --%s", n.service, f)
			}
		}
	}

	// MinIO for media, with a volume and overridable credentials.
	minio := services["minio"]
	if !strings.HasPrefix(getString(minio, "image"), "minio/minio") {
		t.Fatalf("no minio service with the minio/minio image")
	}
	for _, k := range []string{"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} {
		if v := getString(minio, "environment", k); !regexp.MustCompile(`^\$\{` + k + `:-.+\}$`).MatchString(v) {
			t.Errorf("minio %s = %q; want ${%s:-default}", k, v, k)
		}
	}
	if len(getList(minio, "volumes")) == 0 {
		t.Error("minio has no volume")
	}

	// The load balancer publishes MQTT and HTTP and balances over every node.
	lb := services["lb"]
	published := map[string]bool{}
	for _, p := range getList(lb, "ports") {
		parts := strings.Split(p.(string), ":")
		published[parts[len(parts)-1]] = true
	}
	for _, p := range []string{"1883", "8080"} {
		if !published[p] {
			t.Errorf("lb does not publish %s", p)
		}
	}
	if !slices.Contains(getList(lb, "volumes"), any("./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro")) {
		t.Error("lb does not mount ./haproxy.cfg")
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.service)
	}
	checkHAProxy(t, names)
}

// checkHAProxy asserts that every backend balances by client IP over all
// nodes and health-checks /readyz on the HTTP port.
func checkHAProxy(t *testing.T, nodes []string) {
	t.Helper()
	b, err := os.ReadFile(deployFile("haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	backends := map[string][]string{}
	var cur, defaults string
	for _, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if raw[0] != ' ' && raw[0] != '\t' {
			cur = ""
			if kind, name, _ := strings.Cut(line, " "); kind == "backend" {
				cur = name
				backends[cur] = nil
			} else if kind == "defaults" {
				cur = "defaults"
			}
			continue
		}
		if cur == "defaults" {
			defaults += line + "\n"
		} else if cur != "" {
			backends[cur] = append(backends[cur], line)
		}
	}
	if !regexp.MustCompile(`(?m)^default-server .*\bcheck port 8080\b`).MatchString(defaults) {
		t.Error("haproxy: servers are not health-checked on the HTTP port 8080 (default-server ... check port 8080)")
	}
	ports := map[string]bool{}
	for name, lines := range backends {
		if !slices.Contains(lines, "balance source") {
			t.Errorf("haproxy backend %s: no `balance source` (client-IP affinity)", name)
		}
		if !slices.Contains(lines, "option httpchk GET /readyz") || !slices.Contains(lines, "http-check expect status 200") {
			t.Errorf("haproxy backend %s: does not check GET /readyz for 200", name)
		}
		var servers []string
		for _, l := range lines {
			f := strings.Fields(l)
			if f[0] == "server" && len(f) >= 3 {
				host, port, _ := strings.Cut(f[2], ":")
				servers = append(servers, host)
				ports[port] = true
			}
		}
		sort.Strings(servers)
		if !slices.Equal(servers, nodes) {
			t.Errorf("haproxy backend %s: servers %v; want every node %v", name, servers, nodes)
		}
	}
	if !ports["1883"] || !ports["8080"] {
		t.Errorf("haproxy: no backends for MQTT (1883) and HTTP (8080): %v", ports)
	}
}

// ---- Dockerfile -----------------------------------------------------------

func TestDockerfile(t *testing.T) {
	stages := readDockerfile(t, deployFile("Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, have %d stages", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:") {
		t.Errorf("builder stage FROM %s; want golang", build.from)
	}

	var goBuild, modDownload, copyAll int = -1, -1, -1
	for i, in := range build.instrs {
		switch {
		case in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			goBuild = i
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "./cmd/edgechat"} {
				if !strings.Contains(in.args, want) {
					t.Errorf("go build lacks %s: %s", want, in.args)
				}
			}
		case in.cmd == "RUN" && strings.Contains(in.args, "go mod download"):
			modDownload = i
		case in.cmd == "COPY" && strings.HasPrefix(in.args, ". "):
			copyAll = i
		}
	}
	if goBuild < 0 {
		t.Fatal("builder stage has no go build")
	}
	if modDownload < 0 || copyAll < 0 || modDownload > copyAll {
		t.Error("modules are not downloaded in their own layer before the sources are copied")
	}

	var user, entrypoint, volume string
	var expose []string
	for _, in := range final.instrs {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "VOLUME":
			volume = in.args
		case "EXPOSE":
			expose = append(expose, strings.Fields(in.args)...)
		case "RUN":
			t.Errorf("final stage runs %q: distroless/scratch has no shell", in.args)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	nonrootImage := strings.HasSuffix(final.from, ":nonroot") || strings.Contains(final.from, ":nonroot-") || strings.HasSuffix(final.from, ":debug-nonroot")
	switch {
	case uid == "" && !nonrootImage:
		t.Errorf("final stage (FROM %s) sets no USER and is not a nonroot image", final.from)
	case uid == "root" || uid == "0":
		t.Errorf("final stage runs as %s", user)
	case uid != "" && !nonrootImage:
		// A numeric UID is needed for Kubernetes' runAsNonRoot check.
		if _, err := strconv.Atoi(uid); err != nil {
			t.Errorf("USER %s: use a numeric UID (runAsNonRoot cannot verify names)", user)
		}
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) < 2 || ep[1] != "serve" {
		t.Fatalf("ENTRYPOINT %s; want exec form [\"/edgechat\", \"serve\", ...]", entrypoint)
	}
	inv := invocation{where: "Dockerfile ENTRYPOINT", args: ep[2:], env: imageEnv(t)}
	if cfg := checkInvocation(t, inv); cfg.DataDir != dataDir {
		t.Errorf("image data directory %q (ENV EDGECHAT_DATA); want %s", cfg.DataDir, dataDir)
	}
	if !strings.Contains(volume, dataDir) {
		t.Errorf("VOLUME %q does not hold %s", volume, dataDir)
	}
	for _, p := range []string{"1883", "8883", "8080", "7946"} {
		if !slices.Contains(expose, p) {
			t.Errorf("EXPOSE %v lacks %s", expose, p)
		}
	}
}

// imageEnv is the environment the final image stage sets (ENV K=V).
func imageEnv(t *testing.T) map[string]string {
	t.Helper()
	stages := readDockerfile(t, deployFile("Dockerfile"))
	env := map[string]string{}
	for _, in := range stages[len(stages)-1].instrs {
		if in.cmd != "ENV" {
			continue
		}
		for _, kv := range strings.Fields(in.args) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("Dockerfile: use ENV K=V, not %q", in.args)
			}
			env[k] = v
		}
	}
	return env
}

// ---- systemd --------------------------------------------------------------

func TestSystemdUnit(t *testing.T) {
	u := readINI(t, deployFile("systemd/edgechat.service"))
	svc := "Service"
	for key, want := range map[string]string{
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"ProtectHome":     "yes",
		"PrivateTmp":      "yes",
		"Restart":         "on-failure",
	} {
		if got := u.last(svc, key); got != want {
			t.Errorf("%s=%q; want %q", key, got, want)
		}
	}
	if user := u.last(svc, "User"); user == "" || user == "root" || user == "0" {
		t.Errorf("User=%q; want a dedicated unprivileged user", user)
	}
	if n, err := strconv.Atoi(u.last(svc, "LimitNOFILE")); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE=%q; want ≥ 65536", u.last(svc, "LimitNOFILE"))
	}
	if v := u.last(svc, "AmbientCapabilities"); v != "" {
		t.Errorf("AmbientCapabilities=%q; the ports are unprivileged, grant nothing", v)
	}
	if u.last(svc, "TimeoutStopSec") == "" {
		t.Error("no TimeoutStopSec for the graceful shutdown")
	}
	if len(u["Install"]["WantedBy"]) == 0 {
		t.Error("no [Install] WantedBy: the unit cannot be enabled")
	}

	// StateDirectory=edgechat is /var/lib/edgechat: the config must use it.
	if sd := u.last(svc, "StateDirectory"); "/var/lib/"+sd != dataDir {
		t.Errorf("StateDirectory=%q; want %s", sd, strings.TrimPrefix(dataDir, "/var/lib/"))
	}
	exec := strings.Fields(u.last(svc, "ExecStart"))
	if len(exec) < 2 || !strings.HasSuffix(exec[0], "/edgechat") || exec[1] != "serve" {
		t.Fatalf("ExecStart=%v; want .../edgechat serve ...", exec)
	}
	inv := invocation{
		where: "systemd/edgechat.service ExecStart",
		args:  exec[2:],
		files: map[string]string{"/etc/edgechat/edgechat.yaml": deployFile("edgechat.example.yaml")},
	}
	if cfg := checkInvocation(t, inv); cfg.DataDir != dataDir {
		t.Errorf("the unit's config puts data in %q, outside its StateDirectory %s", cfg.DataDir, dataDir)
	}
}

// ---- example configuration ------------------------------------------------

// yamlKeys lists the YAML keys of node.Config settable from a file.
func yamlKeys() []string {
	var keys []string
	ty := reflect.TypeFor[node.Config]()
	for i := range ty.NumField() {
		tag, _, _ := strings.Cut(ty.Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	return keys
}

func TestExampleConfig(t *testing.T) {
	path := deployFile("edgechat.example.yaml")
	cfg, err := node.LoadConfig([]string{"--config", path}, nil)
	if err != nil {
		t.Fatalf("node.LoadConfig: %v", err)
	}
	// A node started with the example takes every role (an empty roles
	// list in it once turned media processing off).
	for _, role := range node.Roles {
		if !cfg.HasRole(role) {
			t.Errorf("a node with the example config does not take the %s role", role)
		}
	}
	// Every value is the default but the data directory (documented).
	want := node.Defaults()
	want.DataDir = dataDir
	// "[]" in the file is the default "none" (nil).
	cv := reflect.ValueOf(&cfg).Elem()
	for i := range cv.NumField() {
		if f := cv.Field(i); f.Kind() == reflect.Slice && f.Len() == 0 {
			f.SetZero()
		}
	}
	if !reflect.DeepEqual(cfg, want) {
		gv, wv := reflect.ValueOf(cfg), reflect.ValueOf(want)
		for i := range gv.NumField() {
			if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
				t.Errorf("example config %s = %v; node.Defaults() has %v", gv.Type().Field(i).Name, gv.Field(i).Interface(), wv.Field(i).Interface())
			}
		}
	}

	// Every key is documented, set or commented out; commented-out keys
	// are known to the binary or pending.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	active := map[string]bool{}
	commented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z0-9_]+):`).FindAllStringSubmatch(string(b), -1) {
		active[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`(?m)^# ([a-z0-9_]+): `).FindAllStringSubmatch(string(b), -1) {
		commented[m[1]] = true
	}
	keys := yamlKeys()
	for _, k := range keys {
		if !active[k] && !commented[k] {
			t.Errorf("key %s (node.Config) is missing from the example", k)
		}
	}
	for k := range commented {
		if !slices.Contains(keys, k) && !slices.Contains(pendingKeys, k) {
			t.Errorf("commented-out key %s is neither in node.Config nor pending", k)
		}
	}
	for _, k := range pendingKeys {
		if !active[k] && !commented[k] {
			t.Errorf("pending cluster key %s is not shown (commented out) in the example", k)
		}
	}
}

// TestPendingFlagsStillPending reports allow-list entries the binary has
// since gained, so they can be removed and the checks become strict.
func TestPendingFlagsStillPending(t *testing.T) {
	flags, _ := knownFlags(t)
	for _, f := range pendingFlags {
		if flags[f] {
			t.Logf("--%s is now in node.Usage(): remove it from pendingFlags", f)
		}
	}
	for _, k := range pendingKeys {
		if slices.Contains(yamlKeys(), k) {
			t.Logf("%s is now in node.Config: remove it from pendingKeys (the example may keep it commented out when it has no default)", k)
		}
	}
	if len(pendingFlags) != len(pendingKeys) {
		t.Errorf("pendingFlags and pendingKeys differ in length")
	}
	for i, f := range pendingFlags {
		if strings.ReplaceAll(f, "-", "_") != pendingKeys[i] {
			t.Errorf("pending flag --%s and key %s do not correspond", f, pendingKeys[i])
		}
	}
}
