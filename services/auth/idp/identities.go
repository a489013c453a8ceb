package idp

import (
	"net/http"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/services/auth"
)

// A signed-in user's links to providers: GET, POST and DELETE
// /user/me/identities. Linking needs a valid token of the provider (the
// user signs in both ways) and a proof that the caller is the account's
// user (its current password, or a token of a provider linked already):
// a linked provider proves the user from then on, so an access token
// alone must not add one. Unlinking the last way in is refused.

// Error codes of identity links.
const (
	CodeIdentityTaken = "identity_taken"
	CodeLastSignIn    = "last_sign_in_method"
)

type identityView struct {
	Provider string    `json:"provider"`
	Issuer   string    `json:"issuer"`
	Subject  string    `json:"subject"`
	Email    string    `json:"email,omitempty"`
	LinkedAt time.Time `json:"linkedAt"`
}

type linkRequest struct {
	Provider     string `json:"provider"`
	SubjectToken string `json:"subjectToken"`
	// The proof: the current password, or a token of a provider linked
	// to the account already (one of the two).
	CurrentPassword string `json:"currentPassword"`
	ProofProvider   string `json:"proofProvider"`
	ProofToken      string `json:"proofToken"`
}

// decodeLink is the strict decoder of POST /user/me/identities (fuzzed).
func decodeLink(body []byte) (linkRequest, error) {
	var req linkRequest
	if err := httpapi.DecodeJSONBytes(body, &req); err != nil {
		return req, err
	}
	return req, validateLink(req)
}

func validateLink(req linkRequest) error {
	if req.Provider == "" || req.SubjectToken == "" {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "provider and subjectToken are required")
	}
	byToken := req.ProofProvider != "" || req.ProofToken != ""
	switch {
	case req.CurrentPassword == "" && !byToken:
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "prove the account: currentPassword, or proofProvider and proofToken of a provider linked to it")
	case req.CurrentPassword != "" && byToken:
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "give either currentPassword or proofProvider and proofToken")
	case byToken && (req.ProofProvider == "" || req.ProofToken == ""):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "proofProvider and proofToken go together")
	}
	return nil
}

func (s *Service) identityRoutes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/user/me/identities", Handler: s.handleListIdentities, Class: "read"},
		{Method: http.MethodPost, Pattern: "/user/me/identities", Handler: s.handleLinkIdentity, Class: "auth", MaxBody: maxExchangeBody},
		{Method: http.MethodDelete, Pattern: "/user/me/identities/{provider}", Handler: s.handleUnlinkIdentity, Class: "write"},
	}
}

func (s *Service) listIdentities(w http.ResponseWriter, uid string) {
	links, err := s.accounts.Identities(uid)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	pw, err := s.accounts.HasPassword(uid)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	out := make([]identityView, 0, len(links))
	for _, l := range links {
		out = append(out, identityView{Provider: l.Provider, Issuer: l.Issuer, Subject: l.Subject, Email: l.Email, LinkedAt: l.LinkedAt})
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"identities": out, "password": pw})
}

func (s *Service) handleListIdentities(w http.ResponseWriter, r *http.Request) {
	p, _ := httpapi.PrincipalFrom(r.Context())
	s.listIdentities(w, p.UserID)
}

func (s *Service) handleLinkIdentity(w http.ResponseWriter, r *http.Request) {
	p, _ := httpapi.PrincipalFrom(r.Context())
	var req linkRequest
	if err := httpapi.DecodeJSON(r, &req, maxExchangeBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if err := validateLink(req); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	prov, err := s.Provider(req.Provider)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	proof := auth.PasswordProof{Password: req.CurrentPassword, Provider: req.ProofProvider, SubjectToken: req.ProofToken}
	if err := s.accounts.ProveUser(r.Context(), p.UserID, proof, r); err != nil {
		httpapi.WriteError(w, auth.ProofHTTPError(err))
		return
	}
	id, err := prov.Verify(r.Context(), req.SubjectToken, "")
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	if err := s.accounts.LinkIdentity(r.Context(), p.UserID, toAuth(id)); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	s.listIdentities(w, p.UserID)
}

func (s *Service) handleUnlinkIdentity(w http.ResponseWriter, r *http.Request) {
	p, _ := httpapi.PrincipalFrom(r.Context())
	if err := s.accounts.UnlinkIdentity(r.Context(), p.UserID, r.PathValue("provider")); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

var _ Accounts = (*auth.Service)(nil)
