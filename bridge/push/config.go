package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Providers configures every provider of a Router at once (the node
// builds it from its flags). A nil config leaves that provider off.
type Providers struct {
	APNs *APNsConfig
	FCM  *FCMConfig
	// WebPush configures Web Push. When its VAPID keys are empty they
	// come from VAPIDKeys at the first send: the cluster's replicated
	// key exists only once the push service has made sure of it, after
	// the node started.
	WebPush   *WebPushConfig
	VAPIDKeys func() (public, private string, err error)
}

// NewFromConfig builds the provider of every configured platform into a
// Router. A provider that cannot be built fails the whole (ErrConfig):
// a node should not start with push half configured.
func NewFromConfig(cfg Providers) (*Router, error) {
	providers := map[Platform]Provider{}
	var closers []io.Closer
	fail := func(err error) (*Router, error) {
		for _, c := range closers {
			_ = c.Close()
		}
		return nil, err
	}
	if cfg.APNs != nil {
		p, err := NewAPNs(*cfg.APNs)
		if err != nil {
			return fail(err)
		}
		providers[APNs], closers = p, append(closers, p)
	}
	if cfg.FCM != nil {
		p, err := NewFCM(*cfg.FCM)
		if err != nil {
			return fail(err)
		}
		providers[FCM], closers = p, append(closers, p)
	}
	if cfg.WebPush != nil {
		wc := *cfg.WebPush
		if wc.VAPIDPublicKey != "" || wc.VAPIDPrivateKey != "" {
			p, err := NewWebPush(wc)
			if err != nil {
				return fail(err)
			}
			providers[WebPush] = p
		} else {
			if cfg.VAPIDKeys == nil {
				return fail(fmt.Errorf("%w: webpush: no VAPID keys and no way to get them", ErrConfig))
			}
			providers[WebPush] = &lazyWebPush{cfg: wc, keys: cfg.VAPIDKeys}
		}
	}
	return NewRouter(providers), nil
}

// Close closes the idle connections of every provider.
func (r *Router) Close() error {
	var errs []error
	for _, p := range r.providers {
		if c, ok := p.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// lazyWebPush builds the Web Push provider at the first send whose VAPID
// keys are available; until then a send is RetryLater.
type lazyWebPush struct {
	cfg  WebPushConfig
	keys func() (public, private string, err error)

	mu sync.Mutex
	p  *WebPushProvider
}

func (l *lazyWebPush) Name() string { return string(WebPush) }

func (l *lazyWebPush) provider() (*WebPushProvider, Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.p != nil {
		return l.p, Result{}, nil
	}
	pub, priv, err := l.keys()
	if err != nil {
		res := Result{Outcome: RetryLater}
		return nil, res, errFor(res, string(WebPush), fmt.Errorf("VAPID key: %w", err))
	}
	cfg := l.cfg
	cfg.VAPIDPublicKey, cfg.VAPIDPrivateKey = pub, priv
	p, err := NewWebPush(cfg)
	if err != nil {
		res := Result{Outcome: Failed}
		return nil, res, errFor(res, string(WebPush), err)
	}
	l.p = p
	return p, Result{}, nil
}

func (l *lazyWebPush) Send(ctx context.Context, d Device, n Notification) (Result, error) {
	p, res, err := l.provider()
	if err != nil {
		return res, err
	}
	return p.Send(ctx, d, n)
}

func (l *lazyWebPush) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.p != nil {
		return l.p.Close()
	}
	return nil
}
