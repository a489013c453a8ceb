package region

import (
	"fmt"
	"strconv"

	"github.com/edgechat/edgechat/internal/wire"
)

// Region numbers make Snowflake IDs unique across linked regions: a
// node's machine number (10 bits) is its region's number (0..15) << 6 |
// the number its cluster gave it (1..63), so two regions with different
// numbers never mint the same ID. Region 0 keeps the cluster's numbers
// as they are (a single region's IDs do not change).
const (
	MaxRegionNumber   = 15
	MaxClusterMachine = 63
	clusterBits       = 6
)

// NumberProp is the CONNECT user property in which a link tells its
// region's number.
const NumberProp = "region-number"

// numberClash is in the CONNACK reason of a link refused for its
// region number (checkNumber): the dialling side recognises it there
// (linkClient.open) and says so too.
const numberClash = "region number clash"

// MachineNumber is the Snowflake machine number of cluster machine m in
// region number region.
func MachineNumber(region int, m uint16) uint16 {
	return uint16(region)<<clusterBits | m
}

// checkNumber reads the region number a link told (absent: 0) and
// refuses one that is ours: both regions would mint the same IDs.
func (b *Bridge) checkNumber(peer, told string) error {
	n := 0
	if told != "" {
		v, err := strconv.Atoi(told)
		if err != nil || v < 0 || v > MaxRegionNumber {
			b.m.auth.WithLabelValues("bad_number").Inc()
			b.log.Warn("region link refused: malformed region number", "link", peer, "number", told)
			return fmt.Errorf("region: link %s: region number %q: want 0 to %d: %w", peer, told, MaxRegionNumber, wire.ErrForbidden)
		}
		n = v
	}
	if n == b.cfg.Number {
		b.m.auth.WithLabelValues("number_clash").Inc()
		b.log.Error("region link refused: the other region has this region's number; give each linked region its own --region-number", "link", peer, "number", n)
		return fmt.Errorf("region: link %s has region number %d, which is this region's too (%s: message IDs would collide): give each region its own --region-number: %w", peer, n, numberClash, wire.ErrForbidden)
	}
	return nil
}
