package idp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/backoff"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/auth"
)

// Accounts signs federated users in (implemented by *auth.Service).
type Accounts interface {
	SignInFederated(ctx context.Context, id auth.FederatedIdentity) (auth.Tokens, error)
	FederatedPrincipal(ctx context.Context, id auth.FederatedIdentity) (wire.Principal, error)
	LinkIdentity(ctx context.Context, uid string, id auth.FederatedIdentity) error
	// ProveUser checks the proof a link asks for (auth.Service.ProveUser).
	ProveUser(ctx context.Context, uid string, proof auth.PasswordProof, r *http.Request) error
	UnlinkIdentity(ctx context.Context, uid, provider string) error
	Identities(uid string) ([]auth.IdentityLink, error)
	HasPassword(uid string) (bool, error)
	// SetSessionCookie moves the refresh token into the browser-session
	// cookie ({"session":"cookie"}, as POST /auth/login does).
	SetSessionCookie(w http.ResponseWriter, r *http.Request, t *auth.Tokens)
}

// Config configures the providers.
type Config struct {
	Providers []ProviderConfig // WithDefaults is applied by New
	// HTTPClient is the base client for talking to providers (nil: a
	// default one); a provider's CAFile replaces it for that provider.
	HTTPClient *http.Client
}

// Deps are the service's collaborators.
type Deps struct {
	Accounts Accounts
	// Proposer and FSM replicate the browser code flow's pending logins;
	// both nil: the code flow is off (its routes are not served).
	Proposer   Proposer
	FSM        Registrar
	Logger     *slog.Logger          // nil: slog.Default()
	Registerer prometheus.Registerer // nil: metrics not registered
	Now        func() time.Time      // nil: time.Now
}

type metrics struct {
	verifications *prometheus.CounterVec
	discoveries   *prometheus.CounterVec
	jwksFetches   *prometheus.CounterVec
	exchanges     *prometheus.CounterVec
	codeFlow      *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_oidc_verifications_total",
			Help: "Provider JWTs verified, by provider and result (ok, invalid, claim_required, unavailable).",
		}, []string{"provider", "result"}),
		discoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_oidc_discoveries_total",
			Help: "OIDC discovery attempts by provider and result.",
		}, []string{"provider", "result"}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_oidc_jwks_fetches_total",
			Help: "Fetches of a provider's JWKS by provider and result.",
		}, []string{"provider", "result"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_oidc_token_exchanges_total",
			Help: "POST /auth/oidc/{provider}/token by result.",
		}, []string{"result"}),
		codeFlow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_oidc_code_flow_total",
			Help: "Browser code-flow logins: started, ok, refused.",
		}, []string{"result"}),
	}
}

// Service holds the configured providers.
type Service struct {
	providers map[string]*Provider
	byIssuer  map[string]*Provider
	accounts  Accounts
	proposer  Proposer // nil: no code flow
	now       func() time.Time
	log       *slog.Logger
	m         *metrics
}

// New builds the providers; nothing is fetched yet (Run warms them).
func New(cfg Config, deps Deps) (*Service, error) {
	if deps.Accounts == nil {
		return nil, errors.New("oidc: Deps.Accounts is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	list := make([]ProviderConfig, len(cfg.Providers))
	for i, p := range cfg.Providers {
		list[i] = p.WithDefaults()
	}
	if err := ValidateAll(list); err != nil {
		return nil, err
	}
	if (deps.Proposer == nil) != (deps.FSM == nil) {
		return nil, errors.New("oidc: Deps.Proposer and Deps.FSM go together")
	}
	s := &Service{providers: map[string]*Provider{}, byIssuer: map[string]*Provider{}, accounts: deps.Accounts,
		proposer: deps.Proposer, now: deps.Now, log: deps.Logger.With("service", "oidc"), m: newMetrics()}
	for _, pc := range list {
		client, err := httpClient(pc, cfg.HTTPClient)
		if err != nil {
			return nil, err
		}
		p := newProvider(pc, client, s.log, deps.Now, s.m)
		if pc.ClientSecretFile != "" {
			b, err := os.ReadFile(pc.ClientSecretFile)
			if err != nil {
				return nil, fmt.Errorf("%w: provider %q: client_secret_file: %w", ErrConfig, pc.Name, err)
			}
			p.secret = strings.TrimSpace(string(b))
		}
		s.providers[pc.Name] = p
		s.byIssuer[strings.TrimSuffix(pc.Issuer, "/")] = p
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{s.m.verifications, s.m.discoveries, s.m.jwksFetches, s.m.exchanges, s.m.codeFlow} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("oidc: register metrics: %w", err)
			}
		}
	}
	if deps.FSM != nil {
		deps.FSM.Register(wire.CmdOIDCLogin, applyLogin)
	}
	return s, nil
}

// Provider returns a configured provider by name.
func (s *Service) Provider(name string) (*Provider, error) {
	p, ok := s.providers[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProvider, name)
	}
	return p, nil
}

// Names lists the configured providers, sorted.
func (s *Service) Names() []string {
	out := make([]string, 0, len(s.providers))
	for n := range s.providers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Run warms every provider (discovery and JWKS), retrying with backoff
// those that cannot be reached, until each is warm or ctx ends.
func (s *Service) Run(ctx context.Context) error {
	for _, name := range s.Names() {
		p := s.providers[name]
		go func() {
			bo := backoff.New(time.Second, 5*time.Minute)
			for p.Warm(ctx) != nil {
				if bo.Sleep(ctx) != nil {
					return
				}
			}
		}()
	}
	<-ctx.Done()
	return nil
}

func toAuth(id Identity) auth.FederatedIdentity {
	return auth.FederatedIdentity{Provider: id.Provider, Issuer: id.Issuer, Subject: id.Subject, Username: id.Username,
		DisplayName: id.DisplayName, Picture: id.Picture, Email: id.Email, IssuedAt: id.IssuedAt}
}

// Exchange verifies a provider's JWT and signs its user in: edgechat's
// tokens, as POST /auth/login answers.
func (s *Service) Exchange(ctx context.Context, provider, subjectToken string) (auth.Tokens, error) {
	p, err := s.Provider(provider)
	if err != nil {
		return auth.Tokens{}, err
	}
	id, err := p.Verify(ctx, subjectToken, "")
	if err != nil {
		return auth.Tokens{}, err
	}
	return s.accounts.SignInFederated(ctx, toAuth(id))
}

// CheckToken verifies a token of the named provider: the identity it
// proves (for auth.Service.SetProviderCheck).
func (s *Service) CheckToken(ctx context.Context, provider, token string) (auth.FederatedIdentity, error) {
	p, err := s.Provider(provider)
	if err != nil {
		return auth.FederatedIdentity{}, err
	}
	id, err := p.Verify(ctx, token, "")
	if err != nil {
		return auth.FederatedIdentity{}, err
	}
	return toAuth(id), nil
}

// UnverifiedIssuer reads the "iss" claim of a JWT without verifying
// anything: only to pick the verifier. "" when it is not a JWT.
func UnverifiedIssuer(token string) string {
	if len(token) > maxTokenBytes {
		return ""
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Iss
}

// connectTimeout bounds the verification (and first-sign-in account
// creation) of a provider JWT presented at MQTT CONNECT.
const connectTimeout = 10 * time.Second

// ConnectPrincipal verifies a password presented at MQTT CONNECT when it
// is a JWT of a provider that accepts tokens on CONNECT (handled true);
// handled false: not such a token, the caller verifies it as an
// edgechat token.
func (s *Service) ConnectPrincipal(token string) (p wire.Principal, handled bool, err error) {
	iss := UnverifiedIssuer(token)
	if iss == "" {
		return wire.Principal{}, false, nil
	}
	prov, ok := s.byIssuer[strings.TrimSuffix(iss, "/")]
	if !ok || !prov.cfg.AcceptOnConnect {
		return wire.Principal{}, false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	id, err := prov.Verify(ctx, token, "")
	if err == nil {
		p, err = s.accounts.FederatedPrincipal(ctx, toAuth(id))
	}
	switch {
	case err == nil:
		return p, true, nil
	case errors.Is(err, ErrProviderUnavailable) || errors.Is(err, wire.ErrUnavailable):
		// Not a verdict on the token: the CONNECT is refused as "server
		// unavailable" (the client retries), not "bad password".
		return wire.Principal{}, true, fmt.Errorf("%w: %w", wire.ErrUnavailable, err)
	default:
		return wire.Principal{}, true, fmt.Errorf("%w: %w", wire.ErrBadToken, err)
	}
}

// HTTP error codes of this service.
const (
	CodeUnknownProvider     = "unknown_provider"
	CodeInvalidSubjectToken = "invalid_subject_token"
	CodeClaimRequired       = "claim_required"
	CodeProviderUnavailable = "provider_unavailable"
	CodeRedirectNotAllowed  = "redirect_not_allowed"
	CodeInvalidState        = "invalid_state"
	CodeLoginFailed         = "login_failed"
)

// maxExchangeBody bounds the body of a token exchange.
const maxExchangeBody = 24 << 10

// MaxCallbackQuery is the query string limit of the code flow's callback
// (the gateway's is 2 KiB): a provider's code, state, session_state, iss.
const MaxCallbackQuery = 16 << 10

type exchangeRequest struct {
	SubjectToken string `json:"subjectToken"`
	// SubjectTokenType is accepted for RFC 8693 clients; only JWTs
	// (id_token, access_token or jwt types) are understood.
	SubjectTokenType string `json:"subjectTokenType,omitempty"`
	// Session "cookie": the refresh token goes into the browser-session
	// cookie, not the body (as for POST /auth/login).
	Session string `json:"session,omitempty"`
	// Device names the device signing in, as for POST /auth/login.
	Device string `json:"device,omitempty"`
}

var okTokenTypes = map[string]bool{"": true,
	"urn:ietf:params:oauth:token-type:id_token":     true,
	"urn:ietf:params:oauth:token-type:access_token": true,
	"urn:ietf:params:oauth:token-type:jwt":          true}

// decodeExchange is the strict decoder of a token-exchange body (fuzzed).
func decodeExchange(body []byte) (exchangeRequest, error) {
	var req exchangeRequest
	if err := httpapi.DecodeJSONBytes(body, &req); err != nil {
		return req, err
	}
	return req, validateExchange(req)
}

func validateExchange(req exchangeRequest) error {
	if req.SubjectToken == "" {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "subjectToken is required")
	}
	if !okTokenTypes[req.SubjectTokenType] {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "subjectTokenType %q: only JWTs (id_token, access_token, jwt)", req.SubjectTokenType)
	}
	if req.Session != "" && req.Session != sessionCookie {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, `session must be "cookie" or absent`)
	}
	if err := auth.ValidDevice(req.Device); err != nil {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "%v", err)
	}
	return nil
}

// Routes are the service's HTTP endpoints (all public: the provider's
// token is the credential).
func (s *Service) Routes() []httpapi.Route {
	routes := []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/auth/oidc/providers", Handler: s.handleProviders, Public: true, Class: "read"},
		{Method: http.MethodPost, Pattern: "/auth/oidc/{provider}/token", Handler: s.handleExchange, Public: true, Class: "auth", MaxBody: maxExchangeBody},
	}
	routes = append(routes, s.identityRoutes()...)
	if s.proposer != nil {
		routes = append(routes,
			httpapi.Route{Method: http.MethodGet, Pattern: "/auth/oidc/{provider}/start", Handler: s.handleStart, Public: true, Class: "auth"},
			// Some providers' codes are long (Microsoft Entra ID's run to
			// 2,000 characters and more, Azure AD B2C's past 2,400).
			httpapi.Route{Method: http.MethodGet, Pattern: "/auth/oidc/{provider}/callback", Handler: s.handleCallback, Public: true, Class: "auth",
				MaxQuery: MaxCallbackQuery})
	}
	return routes
}

// httpError maps the errors of sign-in to HTTP errors with stable codes.
func httpError(err error) error {
	switch {
	case errors.Is(err, ErrUnknownProvider):
		return httpapi.Errorf(http.StatusNotFound, CodeUnknownProvider, "no such identity provider")
	case errors.Is(err, ErrRedirectNotAllowed):
		return httpapi.Errorf(http.StatusBadRequest, CodeRedirectNotAllowed, "%v", err)
	case errors.Is(err, ErrBadState):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidState, "%v; start the login again", err)
	case errors.Is(err, ErrLoginFailed):
		return httpapi.Errorf(http.StatusUnauthorized, CodeLoginFailed, "%v", err)
	case errors.Is(err, ErrClaimRequired):
		return httpapi.Errorf(http.StatusForbidden, CodeClaimRequired, "%v", err)
	case errors.Is(err, ErrInvalidToken):
		return httpapi.Errorf(http.StatusUnauthorized, CodeInvalidSubjectToken, "%v", err)
	case errors.Is(err, ErrProviderUnavailable):
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: CodeProviderUnavailable,
			Message: "the identity provider cannot be reached; retry later", RetryAfter: 5 * time.Second}
	case errors.Is(err, auth.ErrBadIdentity):
		return httpapi.Errorf(http.StatusUnauthorized, CodeInvalidSubjectToken, "%v", err)
	case errors.Is(err, auth.ErrIdentityTaken):
		return httpapi.Errorf(http.StatusConflict, CodeIdentityTaken, "%v", err)
	case errors.Is(err, auth.ErrLastSignIn):
		return httpapi.Errorf(http.StatusConflict, CodeLastSignIn, "%v: link another provider first", err)
	case errors.Is(err, auth.ErrNoIdentity):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "%v", err)
	case errors.Is(err, auth.ErrUsernameTaken):
		return httpapi.Errorf(http.StatusConflict, auth.CodeUsernameTaken, "no free user ID for this username")
	case errors.Is(err, auth.ErrSuspended):
		return httpapi.Errorf(http.StatusForbidden, auth.CodeSuspended, "this account is suspended")
	case errors.Is(err, wire.ErrUnavailable):
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "cannot commit now; retry", RetryAfter: time.Second}
	}
	return err
}

// handleProviders lists the configured providers (sign-in buttons, the
// terminal client): name, issuer, client ID and whether the browser code
// flow is served.
func (s *Service) handleProviders(w http.ResponseWriter, r *http.Request) {
	type view struct {
		Name     string `json:"name"`
		Issuer   string `json:"issuer"`
		ClientID string `json:"clientId"`
		CodeFlow bool   `json:"codeFlow"`
	}
	out := []view{}
	for _, name := range s.Names() {
		c := s.providers[name].cfg
		out = append(out, view{Name: c.Name, Issuer: c.Issuer, ClientID: c.ClientID, CodeFlow: s.proposer != nil})
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"providers": out})
}

func (s *Service) handleExchange(w http.ResponseWriter, r *http.Request) {
	var req exchangeRequest
	if err := httpapi.DecodeJSONTyped(r, &req, maxExchangeBody); err != nil {
		httpapi.WriteError(w, err)
		s.m.exchanges.WithLabelValues("bad_request").Inc()
		return
	}
	if err := validateExchange(req); err != nil {
		httpapi.WriteError(w, err)
		s.m.exchanges.WithLabelValues("bad_request").Inc()
		return
	}
	t, err := s.Exchange(auth.WithClientInfo(r.Context(), auth.ClientInfoOf(r, req.Device)), r.PathValue("provider"), req.SubjectToken)
	if err != nil {
		s.m.exchanges.WithLabelValues("refused").Inc()
		level := slog.LevelDebug // bad tokens: counted, not a flood in the log
		if errors.Is(err, ErrProviderUnavailable) || errors.Is(err, wire.ErrUnavailable) {
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "token exchange refused", "provider", r.PathValue("provider"), "err", err)
		httpapi.WriteError(w, httpError(err))
		return
	}
	s.m.exchanges.WithLabelValues("ok").Inc()
	if req.Session == sessionCookie {
		s.accounts.SetSessionCookie(w, r, &t)
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, t)
}
