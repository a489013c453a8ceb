// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// NextImmediate must not hold the inflight read lock while GetAll takes
// it again: a writer (Set, from a delivery) waiting in between blocks the
// second read lock forever (sync.RWMutex queues new readers behind a
// waiting writer), and with it the client and, through the expiry
// sweep, every new connection.
func TestInflightNextImmediateWithConcurrentWriters(t *testing.T) {
	i := NewInflights()
	i.Set(packets.Packet{PacketID: 1, Expiry: -1})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 2; g++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					i.NextImmediate()
				}
			}
		}()
		go func(g int) {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
					id := uint16(2 + g*1000 + n%1000)
					i.Set(packets.Packet{PacketID: id, Expiry: -1})
					i.Delete(id)
				}
			}
		}(g)
	}
	time.Sleep(time.Second) // let them race
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("NextImmediate and Set deadlocked")
	}
}
