package push

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// userPrefs is what prefsCache keeps of a user: every stored mute, those
// ended too (Mutes leaves out what has ended by the time it is asked
// for, so a cached entry does not go stale when a mute runs out), and
// the settings (preview, do-not-disturb). The push sender reads a user's
// mutes and do-not-disturb window for every message it decides, two
// reads (a Badger iterator and a get, each with a JSON decode) of data
// that changes when the user changes a setting.
type userPrefs struct {
	mutes    []Mute
	settings Settings
}

// prefs is uid's mutes and settings, from the cache or read in one
// transaction and cached.
func (s *Service) prefs(uid string) (userPrefs, error) {
	p, gen, ok := s.prefsCache.get(uid)
	if ok {
		return p, nil
	}
	p = userPrefs{settings: Settings{Preview: PreviewFull}}
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMute + uid + "/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var m Mute
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &m) }); err != nil {
				return fmt.Errorf("mutes: %w", err)
			}
			p.mutes = append(p.mutes, m)
		}
		if _, err := fsm.GetJSON(tx, []byte(prefixSettings+uid), &p.settings); err != nil {
			return fmt.Errorf("settings: %w", err)
		}
		return nil
	})
	if err != nil {
		return userPrefs{}, fmt.Errorf("push: read %w", err)
	}
	s.prefsCache.put(uid, p, gen)
	return p, nil
}

// copyMute is m with its own Until (the cache's are shared).
func copyMute(m Mute) Mute {
	if m.Until != nil {
		u := *m.Until
		m.Until = &u
	}
	return m
}

// copySettings is st with its own DND (the cache's is shared).
func copySettings(st Settings) Settings {
	if st.DND != nil {
		d := *st.DND
		st.DND = &d
	}
	return st
}

// mutesInForce are the mutes of ms in force at `at`, copied.
func mutesInForce(ms []Mute, at time.Time) []Mute {
	var out []Mute
	for _, m := range ms {
		if m.Until == nil || at.Before(*m.Until) {
			out = append(out, copyMute(m))
		}
	}
	return out
}

// prefsChanged is the value of a command that wrote a user's mutes or
// settings: the user's cached entry is dropped once it is committed, on
// every node.
type prefsChanged struct {
	c   *prefsCache
	uid string
}

func (p prefsChanged) AfterCommit() { p.c.drop(p.uid) }

// muteSet is a mute command's value: the mute stored.
type muteSet struct {
	Mute
	prefsChanged
}

// settingsSet is a settings command's value: the settings stored.
type settingsSet struct {
	Settings
	prefsChanged
}
