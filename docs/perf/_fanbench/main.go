// Command fanbench measures fan-out delivery of a plain MQTT broker
// (edgechat serve --dev, Mosquitto, mochi): rooms of K subscribers fed by
// open-loop publishers at a fixed delivery rate, and 1:1 pairs. It speaks
// raw MQTT 3.1.1/5 over TCP (tiny codec, so the generator costs little),
// stamps each payload with its scheduled send time, and reports the
// publish→delivery latency distribution, losses and reorders per
// (publisher, subscriber) and the broker's CPU time per delivery (from
// /proc/PID/stat).
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgechat/edgechat/services/auth"
)

var (
	addr    = flag.String("addr", "127.0.0.1:1883", "broker host:port")
	proto   = flag.Int("proto", 5, "MQTT protocol level: 4 (3.1.1) or 5")
	rooms   = flag.Int("rooms", 100, "rooms (topics)")
	k       = flag.Int("k", 10, "subscribers per room (1 = 1:1 pairs)")
	rate    = flag.Float64("rate", 60000, "deliveries per second (publishes/s = rate/k)")
	dur     = flag.Duration("dur", 20*time.Second, "measured duration")
	warm    = flag.Duration("warmup", 3*time.Second, "warm-up, not measured")
	size    = flag.Int("size", 100, "payload bytes (>= 16)")
	qos     = flag.Int("qos", 0, "publish and subscribe QoS (0 or 1)")
	pid     = flag.Int("pid", 0, "broker PID: CPU time per delivery")
	prefix  = flag.String("prefix", "fb", "topic and client id prefix")
	tick    = flag.Duration("tick", time.Millisecond, "publisher pacing tick")
	connect = flag.Int("connect-par", 16, "connections opened at a time")
	mint    = flag.String("mint", "", "print a 1 h operator (admin) token minted with the key of this edgechat data directory, and exit")
)

func main() {
	flag.Parse()
	if *mint != "" {
		tok, err := auth.MintFromKeyDir(filepath.Join(*mint, "keys"), auth.DefaultIssuer, auth.Account{UserID: "operator", Admin: true}, time.Hour)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(tok)
		return
	}
	if *size < 16 {
		*size = 16
	}
	pubRate := *rate / float64(*k)
	nsubs := *rooms * *k
	fmt.Fprintf(os.Stderr, "rooms=%d k=%d subs=%d publishes/s=%.0f deliveries/s=%.0f qos=%d proto=%d\n",
		*rooms, *k, nsubs, pubRate, *rate, *qos, *proto)

	// Subscribers.
	subs := make([]*sub, nsubs)
	var wg sync.WaitGroup
	sem := make(chan struct{}, *connect)
	var failed atomic.Value
	for i := range subs {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := newSub(i, i%*rooms)
			if err != nil {
				failed.Store(err)
				return
			}
			subs[i] = s
		}(i)
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		os.Exit(1)
	}
	// Publishers: one per room.
	pubs := make([]*pub, *rooms)
	for i := range pubs {
		c, err := dial(fmt.Sprintf("%s-p%d", *prefix, i))
		if err != nil {
			fmt.Fprintln(os.Stderr, "publisher:", err)
			os.Exit(1)
		}
		pubs[i] = &pub{id: uint16(i), conn: c, w: bufio.NewWriterSize(c, 16<<10), topic: roomTopic(i)}
		if *qos > 0 {
			go drain(c) // PUBACKs
		}
	}
	for _, s := range subs {
		go s.run()
	}
	time.Sleep(200 * time.Millisecond)

	start := time.Now().Add(50 * time.Millisecond)
	measureFrom := start.Add(*warm)
	end := measureFrom.Add(*dur)
	for _, s := range subs {
		s.from.Store(measureFrom.UnixNano())
		s.to.Store(end.UnixNano())
	}
	var late atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		pace(pubs, start, end, pubRate, &late)
	}()
	var cpu0, cpu1 float64
	var io0, io1 [2]int64
	go func() {
		time.Sleep(time.Until(measureFrom))
		cpu0, io0 = procCPU(*pid), procIO(*pid)
	}()
	go progress(subs, start, end)
	wg.Wait()
	cpu1, io1 = procCPU(*pid), procIO(*pid)
	time.Sleep(500 * time.Millisecond) // stragglers
	var lat []uint32
	var got, reorder, sentMeasured int64
	for _, s := range subs {
		s.mu.Lock()
		lat = append(lat, s.lat...)
		reorder += s.reorder
		s.mu.Unlock()
	}
	for _, p := range pubs {
		sentMeasured += p.measured.Load()
	}
	got = int64(len(lat))
	want := sentMeasured * int64(*k)
	slices.Sort(lat)
	pct := func(q float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := int(q * float64(len(lat)))
		if i >= len(lat) {
			i = len(lat) - 1
		}
		return float64(lat[i]) / 1000
	}
	fmt.Printf("deliveries %d of %d (%.2f%% lost) reordered %d late-sends %d  rate %.0f/s\n",
		got, want, 100*float64(want-got)/float64(max(want, 1)), reorder, late.Load(), float64(got)/dur.Seconds())
	fmt.Printf("latency ms: p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f max %.2f\n",
		pct(.5), pct(.9), pct(.99), pct(.999), pct(1))
	if *pid > 0 && got > 0 {
		fmt.Printf("broker cpu %.2f s over %.0f s = %.1f%% of a core; %.2f µs per delivery\n",
			cpu1-cpu0, dur.Seconds(), 100*(cpu1-cpu0)/dur.Seconds(), (cpu1-cpu0)*1e6/float64(got))
		fmt.Printf("broker syscalls per delivery: write %.3f read %.3f\n",
			float64(io1[1]-io0[1])/float64(got), float64(io1[0]-io0[0])/float64(got))
	}
}

func roomTopic(i int) string { return fmt.Sprintf("%s/room/%d", *prefix, i) }

func progress(subs []*sub, start, end time.Time) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int64
	for now := range t.C {
		if now.After(end) {
			return
		}
		var n int64
		for _, s := range subs {
			n += s.count.Load()
		}
		fmt.Fprintf(os.Stderr, "t=%2.0fs delivered/s %d\n", now.Sub(start).Seconds(), n-last)
		last = n
	}
}

// --- publisher ---

type pub struct {
	id       uint16
	conn     net.Conn
	w        *bufio.Writer
	topic    string
	seq      uint32
	pid      uint16
	measured atomic.Int64
}

// pace publishes for all publishers from one goroutine (one timer, not
// one per publisher): message n is due at start + n/rate, round robin
// over the publishers, and carries its due time.
func pace(pubs []*pub, start, end time.Time, perSec float64, late *atomic.Int64) {
	time.Sleep(time.Until(start))
	interval := time.Duration(float64(time.Second) / perSec)
	next := start
	payload := make([]byte, *size)
	measureFrom := start.Add(*warm).UnixNano()
	dirty := make([]bool, len(pubs))
	t := time.NewTicker(*tick)
	defer t.Stop()
	i := 0
	for {
		now := time.Now()
		for !next.After(now) && next.Before(end) {
			if now.Sub(next) > 10*time.Millisecond {
				late.Add(1)
			}
			p := pubs[i]
			binary.BigEndian.PutUint64(payload[0:], uint64(next.UnixNano()))
			binary.BigEndian.PutUint16(payload[8:], p.id)
			p.seq++
			binary.BigEndian.PutUint32(payload[10:], p.seq)
			if next.UnixNano() >= measureFrom {
				p.measured.Add(1)
			}
			p.pid++
			if p.pid == 0 {
				p.pid = 1
			}
			writePublish(p.w, p.topic, payload, byte(*qos), p.pid)
			dirty[i] = true
			i = (i + 1) % len(pubs)
			next = next.Add(interval)
		}
		for j, d := range dirty {
			if d {
				if err := pubs[j].w.Flush(); err != nil {
					fmt.Fprintln(os.Stderr, "publish:", err)
					return
				}
				dirty[j] = false
			}
		}
		if !next.Before(end) {
			return
		}
		<-t.C
	}
}

// --- subscriber ---

type sub struct {
	conn     net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	from, to atomic.Int64
	count    atomic.Int64
	mu       sync.Mutex
	lat      []uint32 // µs
	last     map[uint16]uint32
	reorder  int64
}

func newSub(i, room int) (*sub, error) {
	c, err := dial(fmt.Sprintf("%s-s%d", *prefix, i))
	if err != nil {
		return nil, err
	}
	s := &sub{conn: c, r: bufio.NewReaderSize(c, 32<<10), w: bufio.NewWriter(c), last: map[uint16]uint32{}}
	if err := subscribe(c, s.r, roomTopic(room), byte(*qos)); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *sub) run() {
	for {
		typ, flags, body, err := readPacket(s.r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				fmt.Fprintln(os.Stderr, "subscriber:", err)
			}
			return
		}
		if typ != 3 {
			continue
		}
		now := time.Now().UnixNano()
		q := (flags >> 1) & 3
		tl := int(binary.BigEndian.Uint16(body))
		rest := body[2+tl:]
		var id uint16
		if q > 0 {
			id = binary.BigEndian.Uint16(rest)
			rest = rest[2:]
		}
		if *proto == 5 {
			n, w := uvarint(rest)
			rest = rest[w+n:]
		}
		if q > 0 {
			s.w.Write([]byte{0x40, 2, byte(id >> 8), byte(id)})
			if s.r.Buffered() == 0 {
				s.w.Flush()
			}
		}
		if len(rest) < 14 {
			continue
		}
		ts := int64(binary.BigEndian.Uint64(rest))
		pubID := binary.BigEndian.Uint16(rest[8:])
		seq := binary.BigEndian.Uint32(rest[10:])
		s.count.Add(1)
		s.mu.Lock()
		if seq <= s.last[pubID] {
			s.reorder++
		}
		s.last[pubID] = seq
		if ts >= s.from.Load() && ts < s.to.Load() {
			d := (now - ts) / 1000
			if d < 0 {
				d = 0
			}
			s.lat = append(s.lat, uint32(d))
		}
		s.mu.Unlock()
	}
}

// --- codec ---

func dial(clientID string) (net.Conn, error) {
	c, err := net.Dial("tcp", *addr)
	if err != nil {
		return nil, err
	}
	var vh []byte
	vh = append(vh, 0, 4, 'M', 'Q', 'T', 'T', byte(*proto), 0x02, 0x01, 0x2c) // clean, keepalive 300 s
	if *proto == 5 {
		vh = append(vh, 0)
	}
	vh = appendString(vh, clientID)
	pk := append([]byte{0x10}, appendVarint(nil, len(vh))...)
	pk = append(pk, vh...)
	if _, err := c.Write(pk); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	typ, _, body, err := readPacket(r)
	if err != nil {
		return nil, fmt.Errorf("connack: %w", err)
	}
	if typ != 2 || len(body) < 2 || body[1] != 0 {
		return nil, fmt.Errorf("connack: type %d body %x", typ, body)
	}
	if r.Buffered() > 0 {
		return nil, errors.New("unexpected data after CONNACK")
	}
	return c, nil
}

func subscribe(c net.Conn, r *bufio.Reader, topic string, q byte) error {
	vh := []byte{0, 1}
	if *proto == 5 {
		vh = append(vh, 0)
	}
	vh = appendString(vh, topic)
	vh = append(vh, q)
	pk := append([]byte{0x82}, appendVarint(nil, len(vh))...)
	if _, err := c.Write(append(pk, vh...)); err != nil {
		return err
	}
	typ, _, body, err := readPacket(r)
	if err != nil {
		return fmt.Errorf("suback: %w", err)
	}
	if typ != 9 || body[len(body)-1] >= 0x80 {
		return fmt.Errorf("suback: type %d body %x", typ, body)
	}
	return nil
}

func writePublish(w *bufio.Writer, topic string, payload []byte, q byte, id uint16) {
	n := 2 + len(topic) + len(payload)
	if q > 0 {
		n += 2
	}
	if *proto == 5 {
		n++
	}
	w.WriteByte(0x30 | q<<1)
	var vb [4]byte
	w.Write(appendVarint(vb[:0], n))
	w.WriteByte(byte(len(topic) >> 8))
	w.WriteByte(byte(len(topic)))
	w.WriteString(topic)
	if q > 0 {
		w.WriteByte(byte(id >> 8))
		w.WriteByte(byte(id))
	}
	if *proto == 5 {
		w.WriteByte(0)
	}
	w.Write(payload)
}

func readPacket(r *bufio.Reader) (typ, flags byte, body []byte, err error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, 0, nil, err
		}
		n += int(b&127) * mul
		mul *= 128
		if b < 128 {
			break
		}
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, 0, nil, err
	}
	return h >> 4, h & 15, body, nil
}

func drain(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

func appendVarint(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 128
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func uvarint(b []byte) (int, int) {
	n, mul := 0, 1
	for i := 0; i < 4 && i < len(b); i++ {
		n += int(b[i]&127) * mul
		mul *= 128
		if b[i] < 128 {
			return n, i + 1
		}
	}
	return n, len(b)
}

// procCPU is the utime+stime of pid in seconds (0 without a pid).
func procCPU(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// procIO is syscr and syscw of pid (/proc/PID/io).
func procIO(pid int) (rw [2]int64) {
	if pid <= 0 {
		return
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			rw[0] = n
		case "syscw":
			rw[1] = n
		}
	}
	return
}
