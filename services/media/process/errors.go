package process

import "errors"

// Rejection is the type of every sentinel error that refuses an upload.
// Its Reason is a stable machine string: the service returns it to the
// client and counts it in metrics, so it never changes once published.
// Details ("ELF header", "12000x9000") are added by wrapping the sentinel
// with fmt.Errorf("%w: ...").
type Rejection struct{ reason string }

func (r *Rejection) Error() string { return "upload refused: " + r.reason }

// Reason is the stable machine reason of the rejection.
func (r *Rejection) Reason() string { return r.reason }

// The sentinel rejections. Test with errors.Is; Reason(err) gives the
// machine string.
var (
	// ErrTypeNotAllowed: the bytes are of a type this upload does not
	// accept (Config.Accept), whatever the name or Content-Type claimed.
	ErrTypeNotAllowed = &Rejection{"type_not_allowed"}
	// ErrExecutable: native executables, Java archives/classes, Android
	// packages, installers and scripts, by content or by name.
	ErrExecutable = &Rejection{"executable"}
	// ErrTooManyPixels: a frame (or the GIF canvas) is larger than
	// Config.MaxPixels, read from the header before any decode.
	ErrTooManyPixels = &Rejection{"too_many_pixels"}
	// ErrTooManyFrames: more GIF frames, or more pixels over all frames,
	// than Config.MaxFrames / Config.MaxTotalPixels.
	ErrTooManyFrames = &Rejection{"too_many_frames"}
	// ErrTooManyScans: a JPEG of more scans than Config.MaxScans. Each
	// scan of a progressive JPEG makes a decoder walk every block of
	// the image, whatever few bytes it holds.
	ErrTooManyScans = &Rejection{"too_many_scans"}
	// ErrInfected: the EICAR test string, or clamd reported a signature.
	ErrInfected = &Rejection{"infected"}
	// ErrMacro: an office document carrying VBA macros while
	// Config.AllowMacros is false.
	ErrMacro = &Rejection{"macro"}
	// ErrCorrupt: the bytes claim a format they do not follow (a header
	// that does not parse, a decoder failure).
	ErrCorrupt = &Rejection{"corrupt"}
	// ErrScanUnavailable: clamd is configured but could not give a
	// verdict. Not the uploader's fault: the service may retry; the
	// upload is not accepted meanwhile (fail closed).
	ErrScanUnavailable = &Rejection{"scan_unavailable"}
)

// Reason returns the machine reason of a rejection anywhere in err's
// chain, or "" when err is nil or not a rejection (I/O errors, a
// cancelled context: faults of the server, not of the upload).
func Reason(err error) string {
	var r *Rejection
	if errors.As(err, &r) {
		return r.reason
	}
	return ""
}
