package node

import (
	"context"
	"errors"

	"github.com/edgechat/edgechat/services/media/store"
)

// newS3Store opens the S3 media store (not merged yet).
func newS3Store(ctx context.Context, c Config) (store.Store, error) {
	return nil, errors.New("the s3 media store is not built yet")
}
