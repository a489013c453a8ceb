// Package peerqueue delivers items to a peer in order, at least once,
// with backoff: the one mechanism behind every "send these to that node
// (provider, region) and retry until it says yes" of edgechat.
//
// A Queue holds the items for one peer in memory, bounded by MaxItems
// (more are refused with ErrFull and counted, never dropped silently). Its
// single sender goroutine sends the oldest items, up to MaxBatch, as one
// Batch through the Sender, waits for the acknowledgement (a nil error)
// and only then sends the next batch; a failed attempt is retried with
// backoff (internal/backoff), each attempt bounded by Timeout. A Set keeps
// one Queue per peer, created on the first Push and dropped (its items
// counted by reason) when the peer goes away: the broker forwards
// publishes to other nodes with a Set, presence sends events to users'
// home nodes with one.
//
// Every batch carries (Epoch, Seq): Epoch is random per Queue, Seq counts
// the items of the queue, so that a receiver (Dedup) skips what a retry
// resends after a lost acknowledgement. Items pruned by the Keep hook
// from a batch already attempted start a new epoch, so that a receiver
// never skips an item it did not get.
//
// Where loss is not allowed (the push bridge to APNs, FCM and Web Push,
// and the region bridge to other clusters) a Persistent queue reads its
// items from a durable Source by position (the bridge's own log in
// Badger) and stores the acknowledged position through a CursorStore
// (BadgerCursor) after each acknowledgement: memory stays bounded by one
// batch, and a restart resumes from the last acknowledged position. It
// never skips an item; it may resend the last batch, which the receiver
// dedupes by position. A pipelined one (NewPipelined, an AsyncSender)
// keeps several batches in flight, reading ahead of its cursor, which
// still moves in order past acknowledged batches only; after a failure
// it resends everything from the cursor (pipelined.go). Both kinds share Metrics, labelled by peer, so a
// dashboard sees every destination alike.
package peerqueue
