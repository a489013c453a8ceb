package node

import (
	"context"
	"fmt"

	pushbridge "github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/services/push"
)

// buildPushBridge builds the push providers of the configured platforms
// into n.PushRouter (Web Push takes the cluster's VAPID key at its first
// send: the push service replicates it in Run) and the admin test route.
func (n *Node) buildPushBridge() error {
	c := n.cfg
	log := n.log.With("component", "push")
	var cfg pushbridge.Providers
	if c.APNsEnabled() {
		cfg.APNs = &pushbridge.APNsConfig{KeyFile: c.APNsKeyFile, KeyID: c.APNsKeyID, TeamID: c.APNsTeamID,
			CertFile: c.APNsCertFile, CertPassword: c.APNsCertPassword, Topic: c.APNsTopic,
			Endpoint: c.APNsEndpoint, TLSConfig: c.PushTLS, Logger: log}
	}
	if c.FCMEnabled() {
		cfg.FCM = &pushbridge.FCMConfig{CredentialsFile: c.FCMCredentialsFile, Endpoint: c.FCMEndpoint,
			TLSConfig: c.PushTLS, Logger: log}
	}
	if c.WebPushEnabled() {
		cfg.WebPush = &pushbridge.WebPushConfig{Subject: c.WebPushSubject, TLSConfig: c.PushTLS,
			AllowPrivateEndpoints: c.PushPrivateEndpoints, Logger: log}
		cfg.VAPIDKeys = n.Push.VAPIDKeys
	}
	router, err := pushbridge.NewFromConfig(cfg)
	if err != nil {
		return fmt.Errorf("node: push providers: %w: %w", ErrConfig, err)
	}
	n.PushRouter = router
	metrics, err := pushbridge.NewMetrics(n.registry)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.pushMetrics = metrics
	n.PushTester, err = pushbridge.NewTester(pushbridge.TesterDeps{Sender: pushbridge.Counted(router, metrics),
		Registrations: pushRegistrations{s: n.Push}, Metrics: metrics, Logger: n.log})
	return err
}

// pushRegistrations adapts the push data service to what the bridge
// reads and removes.
type pushRegistrations struct {
	s       *push.Service
	deleted func(uid string) bool // nil: nobody is deleted
}

func (r pushRegistrations) Devices(uid string) ([]pushbridge.Registered, error) {
	if r.deleted != nil && r.deleted(uid) {
		return nil, nil // a deleted account is not pushed during its grace period
	}
	ds, err := r.s.Devices(uid)
	if err != nil {
		return nil, err
	}
	out := make([]pushbridge.Registered, 0, len(ds))
	for _, d := range ds {
		out = append(out, pushbridge.Registered{Name: d.Device, Device: bridgeDevice(d), UpdatedAt: d.UpdatedAt, Session: d.Session})
	}
	return out, nil
}

func (r pushRegistrations) RemoveToken(ctx context.Context, uid string, p pushbridge.Platform, token string) error {
	return r.s.RemoveToken(ctx, uid, string(p), token)
}

// bridgeDevice is where a registration sends to.
func bridgeDevice(d push.Device) pushbridge.Device {
	bd := pushbridge.Device{Platform: pushbridge.Platform(d.Platform), Token: d.Token, Topic: d.AppID, Sandbox: d.Sandbox}
	if s := d.Subscription; s != nil {
		bd.Endpoint, bd.P256dh, bd.Auth = s.Endpoint, s.Keys.P256dh, s.Keys.Auth
	}
	return bd
}
