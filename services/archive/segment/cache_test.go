package segment

import (
	"bytes"
	"sync"
	"testing"
)

func block(n, size int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = Message{ID: uint64(i + 1), Body: bytes.Repeat([]byte("b"), size)}
	}
	return msgs
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	one := int64(10 * (100 + messageOverhead)) // a block of 10 bodies of 100 B
	c := NewCache(3 * one)
	for i := range 3 {
		c.Add("seg", i, block(10, 100))
	}
	if _, ok := c.Get("seg", 0); !ok { // 0 becomes the most recent
		t.Fatal("block 0 missing")
	}
	c.Add("seg", 3, block(10, 100)) // evicts 1, the least recent
	if _, ok := c.Get("seg", 1); ok {
		t.Fatal("block 1 kept past the bound")
	}
	for _, b := range []int{0, 2, 3} {
		if _, ok := c.Get("seg", b); !ok {
			t.Fatalf("block %d evicted", b)
		}
	}
	if by, n, _, _ := c.Stats(); by != 3*one || n != 3 {
		t.Fatalf("holds %d bytes in %d blocks, want %d in 3", by, n, 3*one)
	}
	c.Add("big", 0, block(100, 100)) // larger than the bound: not kept, nothing evicted
	if _, ok := c.Get("big", 0); ok {
		t.Fatal("oversized block kept")
	}
	if _, n, _, _ := c.Stats(); n != 3 {
		t.Fatalf("%d blocks after an oversized add", n)
	}
	c.Forget("seg")
	if by, n, _, _ := c.Stats(); by != 0 || n != 0 {
		t.Fatalf("after Forget: %d bytes, %d blocks", by, n)
	}
}

func TestCacheZeroCachesNothing(t *testing.T) {
	c := NewCache(0)
	c.Add("seg", 0, block(1, 1))
	if _, ok := c.Get("seg", 0); ok {
		t.Fatal("a zero-byte cache kept a block")
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := NewCache(50 * (10 + messageOverhead))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				c.Add("seg", (i*7+g)%100, block(1, 10))
				c.Get("seg", i%100)
			}
		})
	}
	wg.Wait()
	if by, n, _, _ := c.Stats(); by > 50*(10+messageOverhead) || n > 50 {
		t.Fatalf("over the bound: %d bytes, %d blocks", by, n)
	}
}
