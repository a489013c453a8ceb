package auth

import (
	"context"
	"errors"
	"testing"
)

// avatarProfiles is fakeProfiles that also takes an avatar (as
// *users.Service does) and fails its first failFirst creations.
type avatarFakeProfiles struct {
	*fakeProfiles
	avatars   map[string]string
	failFirst int
}

func (f *avatarFakeProfiles) CreateProfileWithAvatar(ctx context.Context, uid, displayName, avatar string) error {
	f.mu.Lock()
	if f.failFirst > 0 {
		f.failFirst--
		f.mu.Unlock()
		return errors.New("leadership lost while committing log")
	}
	f.avatars[uid] = avatar
	f.mu.Unlock()
	return f.CreateProfile(ctx, uid, displayName)
}

// A federated sign-in whose profile failed to commit when it made the
// account is made again by the sign-in's repair: with the provider's
// picture, as the first sign-in would have made it, not without.
func TestFederatedProfileRepairKeepsThePicture(t *testing.T) {
	e := newEnv(t)
	p := &avatarFakeProfiles{fakeProfiles: e.profiles, avatars: map[string]string{}, failFirst: 1}
	e.svc.profiles = p
	id := fid("s-1", "alice")
	if tk, err := e.svc.SignInFederated(context.Background(), id); err != nil || tk.UserID != "alice" {
		t.Fatalf("sign-in: %+v %v", tk, err)
	}
	name, ok := e.profiles.get("alice")
	p.mu.Lock()
	avatar := p.avatars["alice"]
	p.mu.Unlock()
	if !ok || name != "The alice" || avatar != id.Picture {
		t.Fatalf("repaired profile: name %q (%v), avatar %q; want %q, %q", name, ok, avatar, "The alice", id.Picture)
	}
}
