//go:build !linux

package archive

import "time"

// threadCPU and majorFaults are measured on Linux only.
func threadCPU() time.Duration { return 0 }
func majorFaults() int64       { return 0 }
