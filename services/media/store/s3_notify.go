package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/notification"
)

// probePrefix holds the empty objects ObjectCreated writes to learn that
// its subscription is live. ValidKey refuses keys starting with '.', so
// they never collide with media and List skips them.
const probePrefix = ".edgechat-probe/"

const (
	probeEvery   = 300 * time.Millisecond
	probeTimeout = 10 * time.Second
	relistenMin  = time.Second
	relistenMax  = 30 * time.Second
)

// ObjectCreated subscribes with MinIO's ListenBucketNotification
// (minio-go), which AWS S3 does not offer: there it fails and the service
// polls with List instead.
//
// The listen request is answered only when the first event or ping
// arrives, so minio-go cannot tell when the subscription is in place.
// ObjectCreated therefore writes probe objects (empty, under
// probePrefix) until the event of one comes back, deletes them and then
// returns: from then on every object created in the tier is delivered.
// When the connection drops, it listens again after a pause; objects
// created in between are missed, so the service reconciles with List
// after a restart of the channel's consumer as much as after its own.
func (s *S3) ObjectCreated(ctx context.Context, tier Tier) (<-chan Object, error) {
	if !tier.valid() {
		return nil, fmt.Errorf("store: unknown tier %q", tier)
	}
	var id [8]byte
	rand.Read(id[:])
	probe := probePrefix + hex.EncodeToString(id[:]) + "/"
	bucket := s.buckets[tier]

	lctx, cancel := context.WithCancel(ctx)
	out := make(chan Object, 64)
	live := make(chan error, 1)
	go s.listen(lctx, cancel, bucket, probe, out, live)

	var probes []string
	defer func() {
		// Best effort: a probe left behind is invisible to List and Get.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		for _, k := range probes {
			s.client.RemoveObject(dctx, bucket, k, minio.RemoveObjectOptions{})
		}
	}()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	deadline := time.NewTimer(probeTimeout)
	defer deadline.Stop()
	for {
		k := probe + strconv.Itoa(len(probes))
		if _, err := s.client.PutObject(lctx, bucket, k, strings.NewReader(""), 0, minio.PutObjectOptions{}); err != nil {
			cancel()
			return nil, fmt.Errorf("store: s3 listen %s: write a probe: %w", tier, err)
		}
		probes = append(probes, k)
		select {
		case err := <-live:
			if err != nil {
				cancel()
				return nil, fmt.Errorf("store: s3 listen %s: %w", tier, err)
			}
			return out, nil
		case <-tick.C:
		case <-deadline.C:
			cancel()
			return nil, fmt.Errorf("store: s3 listen %s: no probe came back within %v", tier, probeTimeout)
		case <-ctx.Done():
			cancel()
			return nil, ctx.Err()
		}
	}
}

// listen forwards created objects to out until ctx ends, and reports on
// live once: nil when a probe of this subscription came back, the error
// when listening failed before.
func (s *S3) listen(ctx context.Context, cancel context.CancelFunc, bucket, probe string, out chan<- Object, live chan<- error) {
	defer cancel()
	defer close(out)
	established := false
	pause := relistenMin
	for ctx.Err() == nil {
		var lastErr error
		for info := range s.client.ListenBucketNotification(ctx, bucket, "", "", []string{"s3:ObjectCreated:*"}) {
			if info.Err != nil {
				lastErr = info.Err
				continue
			}
			for _, ev := range info.Records {
				obj, isProbe, ok := eventObject(ev)
				if isProbe {
					if !established && strings.HasPrefix(obj.Key, probe) {
						established = true
						live <- nil
					}
					continue
				}
				if !ok {
					continue
				}
				pause = relistenMin
				select {
				case out <- obj:
				case <-ctx.Done():
					return
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if !established {
			if lastErr == nil {
				lastErr = errors.New("the listen connection ended")
			}
			live <- lastErr
			return
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return
		}
		pause = min(2*pause, relistenMax)
	}
}

// eventObject converts an event record. S3 event keys are URL-encoded.
func eventObject(ev notification.Event) (obj Object, isProbe, ok bool) {
	key, err := url.QueryUnescape(ev.S3.Object.Key)
	if err != nil {
		return Object{}, false, false
	}
	if strings.HasPrefix(key, probePrefix) {
		return Object{Key: key}, true, false
	}
	if ValidKey(key) != nil {
		return Object{}, false, false
	}
	t, _ := time.Parse(time.RFC3339Nano, ev.EventTime)
	return Object{
		Key:         key,
		Size:        ev.S3.Object.Size,
		ContentType: ev.S3.Object.ContentType,
		ETag:        ev.S3.Object.ETag,
		ModTime:     t,
	}, false, true
}
