// Package deploy holds no code: it is the home of edgechat's deployment
// files and of the tests that keep them honest.
//
//   - Dockerfile, .dockerignore: the container image (build from the
//     repository root: docker build -f deploy/Dockerfile .).
//   - compose.yaml, haproxy.cfg: a 3-node cluster with MinIO behind a TCP
//     load balancer with client-IP affinity, for trying a cluster locally.
//   - k8s/: plain Kubernetes manifests (StatefulSet, headless and
//     LoadBalancer Services, PodDisruptionBudget, ConfigMap; kustomization).
//   - systemd/edgechat.service: a hardened unit for a single edge box.
//   - edgechat.example.yaml: every configuration key with its default.
//
// The tests parse every file and assert the invariants the cluster relies
// on (stable node IDs, persistent data, readiness on /readyz, client-IP
// affinity, a disruption budget that keeps a Raft majority, non-root) and
// that every flag, environment variable and configuration key they use
// exists in the binary, so the manifests cannot drift from node/config.go.
// See docs/operations.md for how to use them.
package deploy
