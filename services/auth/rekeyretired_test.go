package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A node that starts with a signing key the cluster has retired (its
// keys/ put back from a copy made before a rotation: a restored disk or
// VM image) makes itself a new key, as it does for a revoked one: it
// signed on with the retired key, and once the retirement was due every
// access token it issued was refused on every node, itself included,
// its users signed in and refused at once, for as long as it ran.
func TestANodeStartedWithARetiredKeyMakesANewOne(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.svc.PublishKey(ctx); err != nil {
		t.Fatal(err)
	}
	e.register("alice", "password1")
	oldKid := e.svc.keys().signer.kid
	before := t.TempDir() // the keys as a copy made now has them
	files, _ := filepath.Glob(filepath.Join(e.keyDir, "*.key"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(before, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rot, err := e.svc.RotateSigningKey(ctx)
	if err != nil || rot.Retired != oldKid {
		t.Fatalf("rotate: %+v %v", rot, err)
	}
	e.clock.Advance(e.svc.cfg.AccessTTL + verifyLeeway + time.Second) // the old key is retired now

	restored := e.restartedOn(e.db, before)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- restored.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-ran })
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		tok, err := restored.MintAccessToken("alice", false)
		if err != nil {
			return err
		}
		for name, s := range map[string]*Service{"itself": restored, "the other node": e.svc} {
			if _, err := s.VerifyAccessToken(tok); err != nil {
				return fmt.Errorf("the restored node signs with %s (retired: %s); its token on %s: %w",
					restored.keys().signer.kid, oldKid, name, err)
			}
		}
		return nil
	})
	if restored.keys().signer.kid == oldKid {
		t.Fatal("the restored node still signs with the retired key")
	}
	if _, err := os.Stat(filepath.Join(before, "retired-"+oldKid+".key")); errors.Is(err, os.ErrNotExist) {
		t.Fatal("the retired key's file was not kept")
	}
}
