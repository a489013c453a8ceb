package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// Two clusters pointed at the same archive bucket (two regions, or a
// staging cluster, on one S3 store with the default bucket name): each
// one's sweeps delete its own orphans and leave the other's segments
// alone. They deleted them (unreferenced in their state), and the first
// cluster's history over them then failed with 500 for good.
func TestTwoClustersOnOneArchiveBucketKeepEachOthersSegments(t *testing.T) {
	m := storetest.StartMinIO(t)
	shared := func(c *node.Config) {
		c.S3ArchiveBucket = "shared-archive"
		c.ArchiveOrphanGrace = time.Second
		c.FeatureLevelEvery = 50 * time.Millisecond
	}
	a := nodetest.StartNode(t, withMinIO(m, "one"), nodetest.WithConfig(shared))
	b := nodetest.StartNode(t, withMinIO(m, "two"), nodetest.WithConfig(shared))
	fa, fb := writeTieringHistory(t, a), writeTieringHistory(t, b)
	for _, n := range []*nodetest.Node{a, b} {
		waitFeatureLevel(t, []*nodetest.Node{n}, n.Token(t, "alice"), featurelevel.Supported)
	}
	beforeA, beforeB := fa.reads(t, a), fb.reads(t, b)
	ctx := context.Background()
	later := time.Now().Add(31 * 24 * time.Hour) // past the hot age: everything but the newest is sealed
	for _, n := range []*nodetest.Node{a, b} {
		if _, st, err := n.SweepArchive(ctx, later); err != nil || st.Segments == 0 {
			t.Fatalf("%s's seal: %+v %v", n.Config.NodeID, st, err)
		}
	}
	// b's group expires (retention): its segments are b's orphans.
	if code := api(t, b, fb.tokens["alice"], "PATCH", "/user/groups/"+fb.gid, map[string]any{"retentionDays": 1}, nil); code != 200 {
		t.Fatalf("set retention: %d", code)
	}
	// Both sweep again, past the grace period.
	for _, now := range []time.Time{later, later.Add(2 * time.Hour), later.Add(4 * time.Hour)} {
		for _, n := range []*nodetest.Node{a, b} {
			if _, _, err := n.SweepArchive(ctx, now); err != nil {
				t.Fatalf("%s's sweep: %v", n.Config.NodeID, err)
			}
		}
	}
	sameReads(t, "the first cluster after the second one's sweeps", beforeA, fa.reads(t, a))
	afterB := fb.reads(t, b)
	for k, v := range beforeB {
		if strings.Contains(k, "with=") && afterB[k] != v { // its direct histories
			t.Errorf("the second cluster's %s differs", k)
		}
	}
	// b's expired group segments are gone from the bucket, a's are there.
	mc, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	count := func(prefix string) int {
		n := 0
		for o := range mc.ListObjects(ctx, "shared-archive", minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			n++
		}
		return n
	}
	if n := count("g/" + fb.gid + "/"); n != 0 {
		t.Errorf("%d objects of the second cluster's expired group are left", n)
	}
	sa, _ := a.Archive.Status()
	if n := count("g/" + fa.gid + "/"); n == 0 {
		t.Errorf("the first cluster's group segments are gone (%d segments indexed)", sa.SealedSegments)
	}
	if n := count("o/"); n != sa.SealedSegments+mustStatus(t, b).SealedSegments {
		t.Errorf("%d owner marks for %d segments", n, sa.SealedSegments+mustStatus(t, b).SealedSegments)
	}
}

func mustStatus(t *testing.T, n *nodetest.Node) (s struct{ SealedSegments int }) {
	t.Helper()
	st, err := n.Archive.Status()
	if err != nil {
		t.Fatal(fmt.Errorf("%s: %w", n.Config.NodeID, err))
	}
	s.SealedSegments = st.SealedSegments
	return s
}
