package region

// Remote profiles (issue 14 point 1): GET /user/bob@us in region eu is
// answered by us over the link, with MQTT 5 request/response, and cached
// here.
//
// Any node of eu may be asked, and only the leader runs the link, so
// each node has its own query connection to us, dialled when first
// needed: client ID $link/eu/q/{node}, username $link/eu and the link's
// secret (Authenticate accepts a suffix after the region; such a
// connection is the link's like any other). It subscribes to its reply
// topic $link/eu/reply/{node} and publishes each request at QoS 1 on
// $link/eu/profile, {"user":"bob"}, with that response topic and a
// random correlation data. us answers on the response topic with the
// same correlation data: {"found":true,"profile":{...}} or
// {"found":false}.
//
// Answers are cached for Config.ProfileTTL, a "no such user" too. When
// the link is down an expired copy is served; with none, the request
// fails with wire.ErrUnavailable (503).

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// Profiles reads this region's profiles for the other regions (the
// users service): the profile as JSON, or found false.
type Profiles interface {
	ProfileJSON(name string) (profile []byte, found bool, err error)
}

// ProfileTopic is where region's query connections ask for profiles.
func ProfileTopic(region string) string { return LinkPrefix + region + "/profile" }

// ReplyTopic is the response topic of region's node's query connection.
func ReplyTopic(region, node string) string { return LinkPrefix + region + "/reply/" + node }

type profileRequest struct {
	User string `json:"user"`
}

type profileAnswer struct {
	Found   bool            `json:"found"`
	Profile json.RawMessage `json:"profile,omitempty"`
}

type cachedProfile struct {
	profile []byte // nil: no such user
	expires time.Time
}

// queries is a node's query connections and cache of remote profiles.
type queries struct {
	mu      sync.Mutex
	clients map[string]*queryClient  // by link
	cache   map[string]cachedProfile // by name@region
}

type queryClient struct {
	lc *linkClient

	mu      sync.Mutex
	pending map[string]chan []byte // answers by correlation data
	subOn   *paho.Client           // the connection the reply topic is subscribed on
}

// maxCachedProfiles bounds the cache; when full it is emptied (simple,
// and the TTL is short anyway).
const maxCachedProfiles = 10000

// RemoteProfile is the profile of addr (name@region of a linked region)
// as JSON, with userId qualified; wire.ErrNotFound for no such user or
// region, wire.ErrUnavailable when the link is down and nothing is
// cached.
func (b *Bridge) RemoteProfile(ctx context.Context, addr string) ([]byte, error) {
	return b.remoteProfile(ctx, addr, false)
}

// RemoteProfileFresh is RemoteProfile asking the other region even when
// a copy is cached (the copy is served only when it cannot be asked):
// the users service asks so before adding a contact, for an account
// deleted since the copy was cached is no one to add. The answer is
// cached as RemoteProfile's.
func (b *Bridge) RemoteProfileFresh(ctx context.Context, addr string) ([]byte, error) {
	return b.remoteProfile(ctx, addr, true)
}

func (b *Bridge) remoteProfile(ctx context.Context, addr string, fresh bool) ([]byte, error) {
	a, err := address.Parse(addr)
	if err != nil || a.Region == "" || wire.ValidUserID(a.Name) != nil {
		return nil, fmt.Errorf("region: %q: %w", addr, wire.ErrNotFound)
	}
	if !b.Linked(a.Region) {
		return nil, fmt.Errorf("region: %q: %w", addr, wire.ErrNoRegion)
	}
	key := a.String()
	now := time.Now()
	b.q.mu.Lock()
	c, ok := b.q.cache[key]
	b.q.mu.Unlock()
	if ok && now.Before(c.expires) && !fresh {
		b.m.profiles.WithLabelValues(a.Region, "cached").Inc()
		return c.answer(addr)
	}
	ans, err := b.fetchProfile(ctx, a)
	if err != nil {
		if ok {
			b.m.profiles.WithLabelValues(a.Region, "stale").Inc()
			return c.answer(addr)
		}
		b.m.profiles.WithLabelValues(a.Region, "unavailable").Inc()
		return nil, fmt.Errorf("region: profile of %s: %w", addr, &wire.RegionUnreachableError{Region: a.Region, Err: err})
	}
	c = cachedProfile{expires: now.Add(b.cfg.ProfileTTL)}
	if ans.Found {
		var p map[string]any
		// null decodes to a nil map (another region's bad answer must not
		// panic here): malformed like anything that is not an object.
		if json.Unmarshal(ans.Profile, &p) != nil || p == nil {
			return nil, fmt.Errorf("region: profile of %s: malformed answer: %w", addr, wire.ErrUnavailable)
		}
		p["userId"] = key
		c.profile = mustJSON(p)
	}
	b.q.mu.Lock()
	if len(b.q.cache) >= maxCachedProfiles {
		b.q.cache = map[string]cachedProfile{}
	}
	b.q.cache[key] = c
	b.q.mu.Unlock()
	b.m.profiles.WithLabelValues(a.Region, "fetched").Inc()
	return c.answer(addr)
}

func (c cachedProfile) answer(addr string) ([]byte, error) {
	if c.profile == nil {
		return nil, fmt.Errorf("region: %q: %w", addr, wire.ErrNotFound)
	}
	return c.profile, nil
}

// queryClient returns the node's query connection to region.
func (b *Bridge) queryClient(region string) *queryClient {
	b.q.mu.Lock()
	defer b.q.mu.Unlock()
	qc := b.q.clients[region]
	if qc == nil {
		lc := &linkClient{link: b.links[region], own: b.cfg.Region, number: b.cfg.Number, tls: b.cfg.TLS, log: b.log, m: b.m, dialTO: b.cfg.Timeout,
			clientID: LinkPrefix + b.cfg.Region + "/q/" + b.cfg.Node}
		qc = &queryClient{lc: lc, pending: map[string]chan []byte{}}
		lc.onPublish = qc.receive
		b.q.clients[region] = qc
	}
	return qc
}

// fetchProfile asks a's region over the node's query connection.
func (b *Bridge) fetchProfile(ctx context.Context, a address.Address) (profileAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	raw, err := b.request(ctx, a.Region, ProfileTopic(b.cfg.Region), mustJSON(profileRequest{User: a.Name}))
	if err != nil {
		return profileAnswer{}, err
	}
	var ans profileAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return profileAnswer{}, fmt.Errorf("malformed answer: %v", err)
	}
	return ans, nil
}

// request publishes payload on topic (under $link/{own}/) over the
// node's query connection to region, with the node's reply topic and a
// random correlation data, and waits for the answer until ctx ends.
func (b *Bridge) request(ctx context.Context, region, topic string, payload []byte) ([]byte, error) {
	qc := b.queryClient(region)
	cl, alive, err := qc.lc.connect(ctx)
	if err != nil {
		return nil, err
	}
	// Everything ends with the connection (paho ends a packet waiting
	// for its answer only at its own timeout).
	pctx, pcancel := context.WithCancel(ctx)
	stop := context.AfterFunc(alive, pcancel)
	defer stop()
	defer pcancel()
	reply := ReplyTopic(b.cfg.Region, b.cfg.Node)
	qc.mu.Lock()
	subscribed := qc.subOn == cl
	qc.mu.Unlock()
	if !subscribed {
		if _, err := cl.Subscribe(pctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: reply, QoS: 1}}}); err != nil {
			qc.lc.drop(cl)
			return nil, err
		}
		qc.mu.Lock()
		qc.subOn = cl
		qc.mu.Unlock()
	}
	corr := make([]byte, 16)
	_, _ = rand.Read(corr)
	ch := make(chan []byte, 1)
	qc.mu.Lock()
	qc.pending[string(corr)] = ch
	qc.mu.Unlock()
	defer func() {
		qc.mu.Lock()
		delete(qc.pending, string(corr))
		qc.mu.Unlock()
	}()
	if _, err := cl.Publish(pctx, &paho.Publish{QoS: 1, Topic: topic, Payload: payload,
		Properties: &paho.PublishProperties{ResponseTopic: reply, CorrelationData: corr}}); err != nil {
		qc.lc.drop(cl)
		return nil, err
	}
	select {
	case ans := <-ch:
		return ans, nil
	case <-pctx.Done():
		return nil, errors.New("no answer")
	}
}

// receive takes an answer on the reply topic (paho's goroutine).
func (qc *queryClient) receive(pr paho.PublishReceived) (bool, error) {
	pk := pr.Packet
	if pk.Properties == nil {
		return true, nil
	}
	ans := pk.Payload
	qc.mu.Lock()
	ch := qc.pending[string(pk.Properties.CorrelationData)]
	qc.mu.Unlock()
	if ch != nil {
		select {
		case ch <- ans:
		default:
		}
	}
	return true, nil
}

func (b *Bridge) closeQueries() {
	b.q.mu.Lock()
	qs := b.q.clients
	b.q.clients = map[string]*queryClient{}
	b.q.mu.Unlock()
	for _, qc := range qs {
		qc.lc.close()
	}
}

// Answer handles a request of region's link (the broker's Links, for a
// publish with a response topic): a profile of a user of this region.
// The broker publishes the answer on the response topic.
func (b *Bridge) Answer(ctx context.Context, region, topic string, payload []byte) ([]byte, error) {
	if topic == SearchTopic(region) {
		return b.answerSearch(region, payload)
	}
	if topic == MediaTopic(region) {
		return b.answerMedia(ctx, region, payload) // media.go
	}
	if topic != ProfileTopic(region) {
		return nil, fmt.Errorf("region: link %s: no request on %q: %w", region, topic, wire.ErrInvalid)
	}
	var req profileRequest
	if err := json.Unmarshal(payload, &req); err != nil || wire.ValidUserID(req.User) != nil {
		return nil, fmt.Errorf("region: link %s: malformed profile request: %w", region, wire.ErrInvalid)
	}
	if b.deps.Profiles == nil {
		return mustJSON(profileAnswer{}), nil
	}
	p, found, err := b.deps.Profiles.ProfileJSON(req.User)
	if err != nil {
		return nil, fmt.Errorf("region: profile of %s: %v: %w", req.User, err, wire.ErrUnavailable)
	}
	b.m.received.WithLabelValues(region, "profile_request").Inc()
	return mustJSON(profileAnswer{Found: found, Profile: p}), nil
}
