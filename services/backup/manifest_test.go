package backup

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validManifest() *Manifest {
	return &Manifest{Format: FormatName, Version: FormatVersion, ID: "20261203T233000.000Z-42",
		Created: time.Date(2026, 12, 3, 23, 30, 0, 0, time.UTC), AppliedIndex: 42, Node: "n1",
		Files: []File{
			{Name: StateName, Size: 10, SHA256: strings.Repeat("a", 64)},
			{Name: "segments/d/alice/bob/1-9.seg", Size: 5, SHA256: strings.Repeat("0", 64)},
		}}
}

func TestParseManifestRoundTrip(t *testing.T) {
	m := validManifest()
	got, err := ParseManifest(m.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.AppliedIndex != 42 || len(got.Files) != 2 || got.Files[1] != m.Files[1] ||
		!got.Created.Equal(m.Created) || got.Bytes() != 15 || got.Segments() != 1 {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestParseManifestRefuses(t *testing.T) {
	for name, mut := range map[string]func(m *Manifest){
		"format":          func(m *Manifest) { m.Format = "tarball" },
		"version":         func(m *Manifest) { m.Version = 2 },
		"no id":           func(m *Manifest) { m.ID = "" },
		"id with slash":   func(m *Manifest) { m.ID = "a/b" },
		"dot id":          func(m *Manifest) { m.ID = ".." },
		"applied 0":       func(m *Manifest) { m.AppliedIndex = 0 },
		"no created":      func(m *Manifest) { m.Created = time.Time{} },
		"no files":        func(m *Manifest) { m.Files = nil },
		"state not first": func(m *Manifest) { m.Files[0], m.Files[1] = m.Files[1], m.Files[0] },
		"twice":           func(m *Manifest) { m.Files = append(m.Files, m.Files[1]) },
		"escape":          func(m *Manifest) { m.Files[1].Name = "segments/../../etc/passwd" },
		"absolute":        func(m *Manifest) { m.Files[1].Name = "segments//etc/passwd" },
		"other dir":       func(m *Manifest) { m.Files[1].Name = "db/000001.sst" },
		"part file":       func(m *Manifest) { m.Files[1].Name = "segments/a.part" },
		"backslash":       func(m *Manifest) { m.Files[1].Name = `segments/a\b` },
		"negative size":   func(m *Manifest) { m.Files[0].Size = -1 },
		"short digest":    func(m *Manifest) { m.Files[0].SHA256 = "abc" },
		"upper digest":    func(m *Manifest) { m.Files[0].SHA256 = strings.Repeat("A", 64) },
	} {
		t.Run(name, func(t *testing.T) {
			m := validManifest()
			mut(m)
			if _, err := ParseManifest(m.Marshal()); !errors.Is(err, ErrDamaged) {
				t.Fatalf("accepted (%v)", err)
			}
		})
	}
	for name, b := range map[string]string{
		"empty":    "",
		"not json": "hello",
		"trailing": string(validManifest().Marshal()) + "{}",
		"array":    "[]",
		"huge":     strings.Repeat(" ", maxManifestBytes+1),
	} {
		if _, err := ParseManifest([]byte(b)); !errors.Is(err, ErrDamaged) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

// FuzzParseManifest: any input is refused with ErrDamaged or parses into
// a manifest that passes its own checks again after encoding.
func FuzzParseManifest(f *testing.F) {
	f.Add(validManifest().Marshal())
	f.Add([]byte(`{"format":"edgechat-backup","version":1}`))
	f.Add([]byte(`{"format":"edgechat-backup","version":1,"id":"x","created":"2026-01-01T00:00:00Z","appliedIndex":1,"files":[{"name":"state","size":0,"sha256":"` + strings.Repeat("f", 64) + `"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("error without ErrDamaged: %v", err)
			}
			return
		}
		for _, f := range m.Files[1:] {
			if ValidKey(strings.TrimPrefix(f.Name, SegmentDir)) != nil || strings.Contains(f.Name, "..") && !strings.Contains(f.Name, "...") && strings.Contains("/"+f.Name+"/", "/../") {
				t.Fatalf("unsafe name accepted: %q", f.Name)
			}
		}
		if _, err := ParseManifest(m.Marshal()); err != nil {
			t.Fatalf("re-encoded manifest refused: %v", err)
		}
	})
}
