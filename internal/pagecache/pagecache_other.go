//go:build !linux

package pagecache

import (
	"errors"
	"os"
)

// Elsewhere than Linux nothing is read ahead (memAvailable says it does
// not know) and nothing is measured or evicted.

func willNeed(*os.File, int64, int64) error { return errors.ErrUnsupported }

func dontNeed(string) error { return nil }

func residentBytes(string, int64) (int64, error) { return 0, errors.ErrUnsupported }

func memAvailable() (int64, bool) { return 0, false }
