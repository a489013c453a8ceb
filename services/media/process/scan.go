package process

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"unicode/utf16"
)

// eicarWindow is how much of each end of a file is searched for the
// EICAR test string. The EICAR spec puts it at the very start of a file
// of at most 128 bytes; scanners find it at either end of larger ones
// too, and so do we.
const eicarWindow = 4096

// eicar returns the EICAR test string. It is assembled at run time so
// that neither this source file nor the compiled binary contains it
// whole: an antivirus on a developer's machine would quarantine them.
func eicar() []byte {
	parts := []string{`X5O!P%@AP[4\PZX54(P^)7CC)7}$`, "EICAR-STANDARD-ANTIVIRUS", "-TEST-FILE!$H+H*"}
	return []byte(strings.Join(parts, ""))
}

// Scan looks for what detection cannot see in the first bytes: the
// EICAR test string, VBA macros in office documents, Java and Android
// archives dressed as plain zips, and, when Config.ClamdAddr is set,
// whatever ClamAV knows.
func Scan(ctx context.Context, cfg Config, path string, d Detection) error {
	cfg = cfg.withDefaults()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	defer f.Close()
	head, tail, err := headTail(f, d.Size, eicarWindow, eicarWindow)
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if sig := eicar(); bytes.Contains(head, sig) || bytes.Contains(tail, sig) {
		return fmt.Errorf("%w: EICAR test string", ErrInfected)
	}
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		if err := scanZip(f, d.Size, cfg.AllowMacros); err != nil {
			return err
		}
	case bytes.HasPrefix(head, oleMagic):
		macros, err := oleHasMacros(f, d.Size)
		if err != nil {
			return err
		}
		if macros && !cfg.AllowMacros {
			return fmt.Errorf("%w: VBA storage in an OLE2 document", ErrMacro)
		}
	}
	if cfg.ClamdAddr != "" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		if err := clamdScan(ctx, cfg.ClamdAddr, cfg.ClamdTimeout, f); err != nil {
			return err
		}
	}
	return nil
}

// scanZip reads a zip's central directory (names only: nothing is
// decompressed, so a zip bomb costs nothing here) for macros and for
// the marks of an executable archive.
func scanZip(r io.ReaderAt, size int64, allowMacros bool) error {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return fmt.Errorf("%w: zip: %v", ErrCorrupt, err)
	}
	var manifest, class, androidManifest, dex bool
	for _, f := range zr.File {
		name := strings.ToLower(f.Name)
		switch base := path.Base(name); {
		case base == "vbaproject.bin" && !allowMacros:
			return fmt.Errorf("%w: %s", ErrMacro, f.Name)
		case name == "meta-inf/manifest.mf":
			manifest = true
		case strings.HasSuffix(name, ".class"):
			class = true
		case name == "androidmanifest.xml":
			androidManifest = true
		case strings.HasSuffix(name, ".dex"):
			dex = true
		}
	}
	switch {
	case manifest && class:
		return fmt.Errorf("%w: Java archive", ErrExecutable)
	case androidManifest && dex:
		return fmt.Errorf("%w: Android package", ErrExecutable)
	}
	return nil
}

var oleMagic = []byte{0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1}

// oleMacroNames are directory entries that hold VBA: the VBA storage
// (Word, Excel, PowerPoint 2007+ binary formats), its _VBA_PROJECT
// stream, Excel's _VBA_PROJECT_CUR and Word 97's Macros storage.
var oleMacroNames = []string{"vba", "_vba_project", "_vba_project_cur", "macros"}

// oleHasMacros walks the directory of an OLE2 compound file ([MS-CFB])
// and reports whether an entry is named as VBA storage. It follows the
// FAT chain of directory sectors, bounded by the number of sectors the
// file can hold, so a looping chain ends.
func oleHasMacros(r io.ReaderAt, size int64) (bool, error) {
	corrupt := func(what string) error { return fmt.Errorf("%w: OLE2 %s", ErrCorrupt, what) }
	var h [512]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return false, corrupt("header")
	}
	if !bytes.Equal(h[:8], oleMagic) {
		return false, corrupt("signature")
	}
	shift := binary.LittleEndian.Uint16(h[0x1e:])
	if shift != 9 && shift != 12 {
		return false, corrupt("sector size")
	}
	ss := int64(1) << shift
	nSectors := size/ss + 1
	perSector := ss / 4
	sectorOff := func(s uint32) int64 { return (int64(s) + 1) * ss }

	// FAT sector numbers: 109 in the header, the rest in the DIFAT chain.
	nFAT := int64(binary.LittleEndian.Uint32(h[0x2c:]))
	if nFAT > nSectors {
		return false, corrupt("FAT sector count")
	}
	fat := make([]uint32, 0, nFAT)
	for i := int64(0); i < 109 && int64(len(fat)) < nFAT; i++ {
		fat = append(fat, binary.LittleEndian.Uint32(h[0x4c+4*i:]))
	}
	buf := make([]byte, ss)
	difat := binary.LittleEndian.Uint32(h[0x44:])
	for steps := int64(0); int64(len(fat)) < nFAT && difat < 0xfffffffa; steps++ {
		if steps > nSectors {
			return false, corrupt("DIFAT chain loops")
		}
		if _, err := r.ReadAt(buf, sectorOff(difat)); err != nil {
			return false, corrupt("DIFAT sector")
		}
		for i := int64(0); i < perSector-1 && int64(len(fat)) < nFAT; i++ {
			fat = append(fat, binary.LittleEndian.Uint32(buf[4*i:]))
		}
		difat = binary.LittleEndian.Uint32(buf[ss-4:])
	}
	next := func(s uint32) (uint32, error) {
		i := int64(s) / perSector
		if i >= int64(len(fat)) {
			return 0, corrupt("sector outside the FAT")
		}
		var e [4]byte
		if _, err := r.ReadAt(e[:], sectorOff(fat[i])+4*(int64(s)%perSector)); err != nil {
			return 0, corrupt("FAT sector")
		}
		return binary.LittleEndian.Uint32(e[:]), nil
	}

	dir := binary.LittleEndian.Uint32(h[0x30:])
	for steps := int64(0); dir < 0xfffffffa; steps++ {
		if steps > nSectors {
			return false, corrupt("directory chain loops")
		}
		if _, err := r.ReadAt(buf, sectorOff(dir)); err != nil {
			return false, corrupt("directory sector")
		}
		for e := int64(0); e+128 <= ss; e += 128 {
			ent := buf[e : e+128]
			n := int(binary.LittleEndian.Uint16(ent[0x40:]))
			if n < 2 || n > 64 || n%2 != 0 || ent[0x42] == 0 {
				continue // unused entry
			}
			u := make([]uint16, n/2-1) // without the terminator
			for i := range u {
				u[i] = binary.LittleEndian.Uint16(ent[2*i:])
			}
			if contains(oleMacroNames, strings.ToLower(string(utf16.Decode(u)))) {
				return true, nil
			}
		}
		var err error
		if dir, err = next(dir); err != nil {
			return false, err
		}
	}
	return false, nil
}
