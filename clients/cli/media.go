package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	tea "github.com/charmbracelet/bubbletea"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// Attachments: /attach uploads a file with a progress bar and sends it
// to the open conversation; /open-media saves a received one. The
// helpers below the commands are pure so that they are tested without a
// terminal or a server.

const (
	// transferTimeout bounds an upload (with the server's processing) or
	// a download: files are up to 25 MB and links may be slow.
	transferTimeout = 30 * time.Minute
	progressWidth   = 20 // cells of the progress bar
	maxNameCells    = 60 // a media name is cut to this in the chat
	maxFileNameLen  = 200
	maxSuffixTries  = 1000
	// downloadsEnv names the directory /open-media saves into.
	downloadsEnv = "EDGECHAT_DOWNLOADS"
)

type (
	// uploadProgressMsg reports how far an attachment's upload is.
	uploadProgressMsg struct {
		up          *upload
		sent, total int64
	}
)

// upload is one /attach in flight. Its goroutine reports progress
// through tick (coalesced: the screen shows the latest figure, not every
// read) and its outcome, a sentMsg, through done.
type upload struct {
	peer, cid string
	total     int64
	sent      atomic.Int64
	tick      chan struct{} // capacity 1
	done      chan tea.Msg  // capacity 1
}

func (u *upload) progress(sent, _ int64) {
	u.sent.Store(sent)
	select {
	case u.tick <- struct{}{}:
	default:
	}
}

// next waits for the upload's next report.
func (u *upload) next() tea.Cmd {
	return func() tea.Msg {
		select {
		case msg := <-u.done:
			return msg
		case <-u.tick:
			return uploadProgressMsg{up: u, sent: u.sent.Load(), total: u.total}
		}
	}
}

// attach runs "/attach PATH [caption]": the file is shown at once with a
// progress bar, uploaded, and sent as a media message with the caption.
func (m *model) attach(args string) tea.Cmd {
	peer := m.st.open
	if peer == "" {
		m.st.status = "open a conversation first: /open NAME, /group NAME or Ctrl+N"
		return nil
	}
	path, caption, err := parseAttach(args)
	if err != nil {
		m.st.status = err.Error()
		return nil
	}
	if len(caption) > edgechat.MaxBodyBytes {
		m.st.status = fmt.Sprintf("the caption is over %d bytes", edgechat.MaxBodyBytes)
		return nil
	}
	path = expandHome(path)
	f, err := os.Open(path)
	if err != nil {
		m.st.status = "attach: " + err.Error()
		return nil
	}
	fi, err := f.Stat()
	problem := ""
	switch {
	case err != nil:
		problem = err.Error()
	case !fi.Mode().IsRegular():
		problem = path + " is not a regular file"
	case fi.Size() == 0:
		problem = path + " is empty"
	}
	if problem != "" {
		_ = f.Close()
		m.st.status = "attach: " + problem
		return nil
	}
	name := filepath.Base(path)
	ctype := contentType(f, name)
	local := edgechat.MediaInfo{Name: name, Size: fi.Size(), Mime: ctype, Kind: kindOf(ctype)}
	up := &upload{peer: peer, cid: edgechat.NewCID(), total: fi.Size(), tick: make(chan struct{}, 1), done: make(chan tea.Msg, 1)}
	m.st.addPendingMedia(peer, up.cid, local, caption, m.now())
	m.input.Reset()
	cl, ctx := m.cl, m.ctx
	go func() {
		defer f.Close()
		uctx, cancel := context.WithTimeout(ctx, transferTimeout)
		defer cancel()
		info, err := cl.UploadMedia(uctx, f, up.total, name, ctype, up.progress)
		if err != nil {
			up.done <- sentMsg{peer: peer, cid: up.cid, err: uploadError(err)}
			return
		}
		sctx, scancel := context.WithTimeout(ctx, sendTimeout)
		defer scancel()
		got, err := cl.SendMessage(sctx, addressed(peer, edgechat.Message{Type: "media", Body: caption, CID: up.cid, Media: &info}))
		up.done <- sentMsg{peer: peer, cid: up.cid, msg: got, err: err}
	}()
	return up.next()
}

// uploadError says what went wrong in words a user can act on.
func uploadError(err error) error {
	var re *edgechat.MediaRejectedError
	var ae *edgechat.APIError
	switch {
	case errors.As(err, &re):
		return fmt.Errorf("refused by the server (%s)", strings.ReplaceAll(re.Reason, "_", " "))
	case errors.Is(err, edgechat.ErrMediaTooLarge):
		return errors.New("too large for the server")
	case errors.Is(err, edgechat.ErrMediaQuota) && errors.As(err, &ae) && ae.RetryAfter > 0:
		return fmt.Errorf("daily upload quota used up; try again in %s", ae.RetryAfter.Round(time.Minute))
	case errors.Is(err, edgechat.ErrMediaQuota):
		return errors.New("daily upload quota used up")
	}
	return fmt.Errorf("upload: %w", err)
}

// openMedia runs "/open-media [N]": it saves the media of the N-th newest
// media message (default 1) of the open conversation into the downloads
// directory, under its name made safe, never over an existing file.
func (m *model) openMedia(args string) tea.Cmd {
	n := 1
	if a := strings.TrimSpace(args); a != "" {
		v, err := strconv.Atoi(a)
		if err != nil || v < 1 {
			m.st.status = "usage: /open-media [N] (N = 1 for the newest media message)"
			return nil
		}
		n = v
	}
	if m.st.open == "" {
		m.st.status = "open a conversation first: /open NAME, /group NAME or Ctrl+N"
		return nil
	}
	info, ok := m.st.nthMedia(m.st.open, n)
	if !ok {
		m.st.status = fmt.Sprintf("no media message #%d in this conversation", n)
		return nil
	}
	m.input.Reset()
	m.st.status = "downloading " + displayName(info.Name) + "…"
	cl, ctx, dir := m.cl, m.ctx, m.downloads
	return func() tea.Msg {
		dctx, cancel := context.WithTimeout(ctx, transferTimeout)
		defer cancel()
		path, n, err := saveMedia(dctx, cl, dir, info)
		if err != nil {
			return statusMsg("open-media: " + err.Error())
		}
		return statusMsg(fmt.Sprintf("saved %s to %s", humanSize(n), path))
	}
}

// saveMedia downloads info into a new file of dir and returns its path;
// a failed download leaves no file behind.
func saveMedia(ctx context.Context, cl chatClient, dir string, info edgechat.MediaInfo) (string, int64, error) {
	f, path, err := createUnique(dir, safeFileName(info.Name, "media-"+info.ID))
	if err != nil {
		return "", 0, err
	}
	n, err := cl.DownloadMedia(ctx, info.ID, f, false)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", 0, err
	}
	if abs, aerr := filepath.Abs(path); aerr == nil {
		path = abs
	}
	return path, n, nil
}

// parseAttach splits "/attach" arguments into the path and the caption.
// A path with spaces is quoted ("..." or '...').
func parseAttach(args string) (path, caption string, err error) {
	args = strings.TrimSpace(args)
	if args == "" {
		return "", "", errors.New("usage: /attach PATH [caption]")
	}
	if q := args[0]; q == '"' || q == '\'' {
		end := strings.IndexByte(args[1:], q)
		if end < 0 {
			return "", "", fmt.Errorf("attach: no closing %c", q)
		}
		path, caption = args[1:1+end], args[2+end:]
		if caption != "" && !unicode.IsSpace(rune(caption[0])) {
			return "", "", errors.New("attach: a space must follow the quoted path")
		}
	} else if i := strings.IndexFunc(args, unicode.IsSpace); i >= 0 {
		path, caption = args[:i], args[i:]
	} else {
		path = args
	}
	if path == "" {
		return "", "", errors.New("usage: /attach PATH [caption]")
	}
	return path, strings.TrimSpace(caption), nil
}

// expandHome turns a leading ~/ into the home directory, as a shell would.
func expandHome(path string) string {
	rest, ok := strings.CutPrefix(path, "~/")
	if !ok {
		return path
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return path
	}
	return filepath.Join(home, rest)
}

// contentType is what the upload claims: from the extension, else
// sniffed from the first bytes. The server reads the real type itself;
// this only helps it and the pending line.
func contentType(f *os.File, name string) string {
	if t := mime.TypeByExtension(strings.ToLower(filepath.Ext(name))); t != "" {
		return t
	}
	head := make([]byte, 512)
	n, _ := f.ReadAt(head, 0) // ReadAt leaves the offset alone for the upload
	return http.DetectContentType(head[:n])
}

// kindOf guesses the server's kind from a content type, for the line an
// attachment shows before the server has classified it.
func kindOf(ctype string) string {
	t, _, _ := mime.ParseMediaType(ctype)
	switch {
	case strings.HasPrefix(t, "image/"):
		return edgechat.MediaImage
	case strings.HasPrefix(t, "video/"):
		return edgechat.MediaVideo
	case strings.HasPrefix(t, "audio/"):
		return edgechat.MediaAudio
	case t == "application/pdf":
		return edgechat.MediaPDF
	}
	return edgechat.MediaFile
}

// mediaLabel is how a media message shows in the chat:
// "[image IMG_0042.jpg 2560×1920 482 KB]", "[file report.pdf 1.2 MB]".
func mediaLabel(mi *edgechat.MediaInfo) string {
	kind := mi.Kind
	if kind == "" {
		kind = edgechat.MediaFile
	}
	name := displayName(mi.Name)
	if name == "" {
		name = "(unnamed)"
	}
	parts := []string{kind, name}
	if mi.Width > 0 && mi.Height > 0 {
		parts = append(parts, fmt.Sprintf("%d×%d", mi.Width, mi.Height))
	}
	if mi.DurationMs > 0 {
		parts = append(parts, clock(time.Duration(mi.DurationMs)*time.Millisecond))
	}
	if mi.Size > 0 {
		parts = append(parts, humanSize(mi.Size))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// messageText is a message as one piece of text, safe to print: the
// body, or for media the label and the caption. Newlines of the body are
// kept (oneLine and renderEntry deal with them).
func messageText(msg edgechat.Message) string {
	body := safeText(msg.Body, true)
	if msg.Type != "media" || msg.Media == nil {
		return body
	}
	if body == "" {
		return mediaLabel(msg.Media)
	}
	return mediaLabel(msg.Media) + " " + body
}

// clock formats a duration as m:ss or h:mm:ss.
func clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// humanSize formats a byte count in decimal units, three significant
// digits at most: 482 KB, 1.2 MB.
func humanSize(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/1000, 0
	for v >= 999.5 && i < 3 {
		v /= 1000
		i++
	}
	unit := []string{"KB", "MB", "GB", "TB"}[i]
	if v < 9.95 {
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

// progressBar renders sent of total as width cells and a percentage:
// "████████░░░░░░░░░░░░  40%". The cells round down, so the bar is full
// only when everything is sent. It is plain text rather than
// bubbles/progress, which would bring charmbracelet/harmonica (not in
// go.mod) for an animation a chat line does not need.
func progressBar(sent, total int64, width int) string {
	if total <= 0 {
		total = 1
	}
	sent = min(max(sent, 0), total)
	filled := int(sent * int64(width) / total)
	pct := int(sent * 100 / total)
	return strings.Repeat("█", filled) + strings.Repeat("░", width-filled) + fmt.Sprintf(" %3d%%", pct)
}

// safeFileName turns a media name (chosen by whoever uploaded it) into a
// file name that stays in the downloads directory and is valid on the
// usual systems: path separators and characters Windows refuses become
// "_", control characters go, leading dots (hidden files, "..") and
// trailing dots and spaces are trimmed, reserved device names get a "_",
// and it is cut to maxFileNameLen bytes keeping the extension. fallback
// is used (made safe the same way) when nothing is left.
func safeFileName(name, fallback string) string {
	clean := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			switch {
			case r == utf8.RuneError, unicode.IsControl(r), isBidiControl(r):
			case strings.ContainsRune(`/\<>:"|?*`, r):
				b.WriteRune('_')
			default:
				b.WriteRune(r)
			}
		}
		s = strings.TrimLeft(strings.TrimSpace(b.String()), ". ")
		s = strings.TrimRight(s, ". ")
		if s == "" {
			return ""
		}
		ext := filepath.Ext(s)
		stem := strings.TrimSuffix(s, ext)
		if len(ext) > 16 { // not a real extension: keep the start of the name instead
			stem, ext = s, ""
		}
		if isReservedName(stem) {
			stem = "_" + stem
		}
		if len(stem)+len(ext) > maxFileNameLen {
			stem = cutBytes(stem, maxFileNameLen-len(ext))
		}
		return stem + ext
	}
	if s := clean(name); s != "" {
		return s
	}
	if s := clean(fallback); s != "" {
		return s
	}
	return "media"
}

// isReservedName reports the Windows device names (CON, NUL, COM1, ...),
// which cannot be files there whatever their extension.
func isReservedName(stem string) bool {
	u := strings.ToUpper(strings.TrimSpace(stem))
	switch u {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	return len(u) == 4 && (strings.HasPrefix(u, "COM") || strings.HasPrefix(u, "LPT")) && u[3] >= '1' && u[3] <= '9'
}

// cutBytes cuts s to at most n bytes without splitting a character.
func cutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// createUnique creates name in dir, or "stem (1).ext", "stem (2).ext"...
// when it exists: a download never replaces a file. O_EXCL makes the
// check and the creation one step, and refuses a symlink planted there.
func createUnique(dir, name string) (*os.File, string, error) {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 0; i < maxSuffixTries; i++ {
		candidate := name
		if i > 0 {
			candidate = fmt.Sprintf("%s (%d)%s", stem, i, ext)
		}
		path := filepath.Join(dir, candidate)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create %s: %w", path, err)
		}
		return f, path, nil
	}
	return nil, "", fmt.Errorf("%s and %d numbered variants exist in %s", name, maxSuffixTries, dir)
}
