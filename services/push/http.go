package push

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Error codes of this service (besides httpapi's shared codes).
const (
	CodePushDisabled        = "push_disabled"
	CodeInvalidDevice       = "invalid_device"
	CodeInvalidPlatform     = "invalid_platform"
	CodeInvalidPushToken    = "invalid_push_token"
	CodeInvalidSubscription = "invalid_subscription"
	CodeInvalidConversation = "invalid_conversation"
	CodeInvalidPreview      = "invalid_preview"
	CodeInvalidDND          = "invalid_dnd"
	CodeTooManyDevices      = "too_many_devices"
	CodeTooManyMutes        = "too_many_mutes"
	CodeInvalidGroup        = "invalid_group"
	CodeTooManyOptIns       = "too_many_opt_ins"
)

const maxSmallBody = 1 << 10

// Routes are the service's HTTP endpoints.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/user/me/devices", Handler: s.handleRegister, Class: httpapi.ClassWrite, MaxBody: maxRegisterBody},
		{Method: http.MethodGet, Pattern: "/user/me/devices", Handler: s.handleDevices, Class: httpapi.ClassRead},
		{Method: http.MethodDelete, Pattern: "/user/me/devices/{device}", Handler: s.handleUnregister, Class: httpapi.ClassWrite},
		{Method: http.MethodPut, Pattern: "/user/me/mutes/{conversation}", Handler: s.handleMute, Class: httpapi.ClassWrite, CatchUp: true, MaxBody: maxSmallBody},
		{Method: http.MethodDelete, Pattern: "/user/me/mutes/{conversation}", Handler: s.handleUnmute, Class: httpapi.ClassWrite, CatchUp: true},
		{Method: http.MethodGet, Pattern: "/user/me/mutes", Handler: s.handleMutes, Class: httpapi.ClassRead},
		{Method: http.MethodGet, Pattern: "/user/me/push", Handler: s.handleGetSettings, Class: httpapi.ClassRead},
		{Method: http.MethodPut, Pattern: "/user/me/push", Handler: s.handlePutSettings, Class: httpapi.ClassWrite, MaxBody: maxSmallBody},
		{Method: http.MethodPut, Pattern: "/user/me/push/groups/{gid}", Handler: s.handleOptIn, Class: httpapi.ClassWrite, CatchUp: true, MaxBody: maxSmallBody},
		{Method: http.MethodDelete, Pattern: "/user/me/push/groups/{gid}", Handler: s.handleOptOut, Class: httpapi.ClassWrite, CatchUp: true},
		{Method: http.MethodGet, Pattern: "/user/me/push/groups", Handler: s.handleOptIns, Class: httpapi.ClassRead},
		{Method: http.MethodGet, Pattern: "/push/vapid", Handler: s.handleVAPID, Public: true, Class: httpapi.ClassRead},
	}
}

// httpError maps the service's errors to HTTP errors with stable codes.
func httpError(err error) error {
	bad := func(code string) error { return httpapi.Errorf(http.StatusBadRequest, code, "%v", err) }
	switch {
	case errors.Is(err, ErrDisabled):
		return httpapi.Errorf(http.StatusConflict, CodePushDisabled, "push for this platform is not configured on this server")
	case errors.Is(err, ErrInvalidDevice):
		return bad(CodeInvalidDevice)
	case errors.Is(err, ErrInvalidPlatform):
		return bad(CodeInvalidPlatform)
	case errors.Is(err, ErrInvalidToken):
		return bad(CodeInvalidPushToken)
	case errors.Is(err, ErrInvalidSubscription):
		return bad(CodeInvalidSubscription)
	case errors.Is(err, ErrInvalidConversation):
		return bad(CodeInvalidConversation)
	case errors.Is(err, ErrInvalidPreview):
		return bad(CodeInvalidPreview)
	case errors.Is(err, ErrInvalidDND):
		return bad(CodeInvalidDND)
	case errors.Is(err, ErrInvalidGroup):
		return bad(CodeInvalidGroup)
	case errors.Is(err, ErrInvalidUntil):
		return bad(httpapi.CodeValidation)
	case errors.Is(err, ErrTooManyDevices):
		return httpapi.Errorf(http.StatusConflict, CodeTooManyDevices, "%v", err)
	case errors.Is(err, ErrTooManyMutes):
		return httpapi.Errorf(http.StatusConflict, CodeTooManyMutes, "%v", err)
	case errors.Is(err, ErrTooManyOptIns):
		return httpapi.Errorf(http.StatusConflict, CodeTooManyOptIns, "%v", err)
	case errors.Is(err, ErrNoDevice):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such device")
	case errors.Is(err, errBadCommand):
		return bad(httpapi.CodeBadRequest)
	case errors.Is(err, wire.ErrUnavailable), errors.Is(err, ErrNoVAPIDKey):
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "cannot commit now; retry", RetryAfter: time.Second}
	}
	return err
}

func principal(w http.ResponseWriter, r *http.Request) (string, bool) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || wire.ValidUserID(p.UserID) != nil {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "a user's bearer token is required"))
		return "", false
	}
	return p.UserID, true
}

// DeviceView is a registration as GET /user/me/devices shows it: the
// token only by its last characters.
type DeviceView struct {
	Device      string    `json:"device"`
	Platform    string    `json:"platform"`
	AppID       string    `json:"appId,omitempty"`
	Sandbox     bool      `json:"sandbox,omitempty"`
	TokenSuffix string    `json:"tokenSuffix"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

func view(d Device) DeviceView {
	tok := d.registration().tokenOf()
	if len(tok) > 8 {
		tok = tok[len(tok)-8:]
	}
	return DeviceView{Device: d.Device, Platform: d.Platform, AppID: d.AppID, Sandbox: d.Sandbox,
		TokenSuffix: tok, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
}

func (s *Service) handleRegister(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	var reg Registration
	if err := httpapi.DecodeJSON(r, &reg, maxRegisterBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	p, _ := httpapi.PrincipalFrom(r.Context())
	d, err := s.RegisterFrom(r.Context(), uid, p.SessionID, reg)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, view(d))
}

func (s *Service) handleDevices(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	ds, err := s.Devices(uid)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	views := make([]DeviceView, 0, len(ds))
	for _, d := range ds {
		views = append(views, view(d))
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"devices": views})
}

func (s *Service) handleUnregister(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	if err := s.Unregister(r.Context(), uid, r.PathValue("device")); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleMute(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	// The body is optional: no body (or only white space) mutes until unmuted.
	var req muteRequest
	if !decodeOptionalBody(w, r, &req) {
		return
	}
	m, err := s.Mute(r.Context(), uid, r.PathValue("conversation"), req.Until)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, m)
}

// decodeOptionalBody strictly decodes a body of at most maxSmallBody
// into v, or leaves v alone when there is no body (or only white space),
// for the PUTs whose body is optional. It answers the errors itself and
// reports whether to go on.
func decodeOptionalBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSmallBody+1))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge) || len(body) > maxSmallBody:
		httpapi.WriteError(w, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "body over %d bytes", maxSmallBody))
		return false
	case err != nil:
		httpapi.WriteError(w, httpapi.BodyReadError(err))
		return false
	}
	if len(bytes.TrimSpace(body)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := httpapi.DecodeJSON(r, v, maxSmallBody); err != nil {
			httpapi.WriteError(w, err)
			return false
		}
	}
	return true
}

func (s *Service) handleUnmute(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	if err := s.Unmute(r.Context(), uid, r.PathValue("conversation")); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleMutes(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	ms, err := s.Mutes(uid, s.now())
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if ms == nil {
		ms = []Mute{}
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"mutes": ms})
}

// handleOptIn takes no body, or an empty JSON object (room for options
// later without breaking clients that send {}).
func (s *Service) handleOptIn(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	var req struct{}
	if !decodeOptionalBody(w, r, &req) {
		return
	}
	o, err := s.OptIn(r.Context(), uid, r.PathValue("gid"))
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, o)
}

func (s *Service) handleOptOut(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	if err := s.OptOut(r.Context(), uid, r.PathValue("gid")); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleOptIns(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	list, err := s.OptIns(uid)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if list == nil {
		list = []GroupOptIn{}
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"groups": list})
}

func (s *Service) handleGetSettings(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	st, err := s.Settings(uid)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.writeSettings(w, st)
}

func (s *Service) handlePutSettings(w http.ResponseWriter, r *http.Request) {
	uid, ok := principal(w, r)
	if !ok {
		return
	}
	var req settingsRequest
	if err := httpapi.DecodeJSON(r, &req, maxSmallBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	u, err := req.update()
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	st, err := s.UpdateSettings(r.Context(), uid, u)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	s.writeSettings(w, st)
}

// writeSettings answers with the preferences (no "dnd" when DND is off)
// and the platforms this cluster can push to.
func (s *Service) writeSettings(w http.ResponseWriter, st Settings) {
	w.Header().Set("Cache-Control", "no-store")
	out := map[string]any{"preview": st.Preview, "platforms": nonNil(s.sortedPlatforms())}
	if st.DND != nil {
		out["dnd"] = st.DND
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Service) handleVAPID(w http.ResponseWriter, _ *http.Request) {
	if !s.enabled[PlatformWebPush] {
		httpapi.WriteError(w, httpError(ErrDisabled))
		return
	}
	pub, _, err := s.VAPIDKeys()
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"publicKey": pub})
}
