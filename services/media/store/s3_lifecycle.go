package store

import (
	"context"
	"fmt"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/lifecycle"
)

// coldRuleID names the one lifecycle rule this package owns; other rules
// of the bucket are kept as they are.
const coldRuleID = "edgechat-cold-transition"

// EnsureColdTransition installs the rule on the processed bucket. S3
// counts the days from an object's creation (its last write), not its
// last read: that is the approximation of "not read for N days" a bucket
// rule can offer. MinIO accepts a transition only to a remote tier
// configured with `mc ilm tier add`; without one it refuses the rule
// (InvalidStorageClass) and the service sweeps instead.
func (s *S3) EnsureColdTransition(ctx context.Context, days int, storageClass string) error {
	if days < 1 || storageClass == "" {
		return fmt.Errorf("store: cold transition after %d days to %q: want days ≥ 1 and a storage class", days, storageClass)
	}
	bucket := s.buckets[TierProcessed]
	cfg, err := s.lifecycle(ctx, bucket)
	if err != nil {
		return err
	}
	rule := lifecycle.Rule{
		ID:         coldRuleID,
		Status:     "Enabled",
		RuleFilter: lifecycle.Filter{}, // the whole bucket: an empty <Prefix/>
		Transition: lifecycle.Transition{Days: lifecycle.ExpirationDays(days), StorageClass: storageClass},
	}
	found := false
	for i, r := range cfg.Rules {
		if r.ID != coldRuleID {
			continue
		}
		if r.Status == rule.Status && r.Transition.Days == rule.Transition.Days && r.Transition.StorageClass == storageClass {
			return nil // already in place: no write, no new rule version
		}
		cfg.Rules[i], found = rule, true
	}
	if !found {
		cfg.Rules = append(cfg.Rules, rule)
	}
	if err := s.client.SetBucketLifecycle(ctx, bucket, cfg); err != nil {
		return fmt.Errorf("store: s3 set lifecycle of %s: %w", bucket, err)
	}
	return nil
}

func (s *S3) ColdTransition(ctx context.Context) (days int, storageClass string, ok bool, err error) {
	cfg, err := s.lifecycle(ctx, s.buckets[TierProcessed])
	if err != nil {
		return 0, "", false, err
	}
	for _, r := range cfg.Rules {
		if r.ID == coldRuleID && r.Status == "Enabled" && r.Transition.StorageClass != "" {
			return int(r.Transition.Days), r.Transition.StorageClass, true, nil
		}
	}
	return 0, "", false, nil
}

// lifecycle reads the bucket's rules; a bucket without any has an empty
// configuration.
func (s *S3) lifecycle(ctx context.Context, bucket string) (*lifecycle.Configuration, error) {
	cfg, err := s.client.GetBucketLifecycle(ctx, bucket)
	if minio.ToErrorResponse(err).Code == "NoSuchLifecycleConfiguration" {
		return lifecycle.NewConfiguration(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: s3 get lifecycle of %s: %w", bucket, err)
	}
	return cfg, nil
}
