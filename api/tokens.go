package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
)

// tokenView describes an API token without its secret: neither the token nor its hash ever
// leaves the store. LastUsedAt is accurate to a minute (the store stamps it at most that often).
type tokenView struct {
	ID            uuid.UUID  `json:"id"`
	Name          string     `json:"name"`
	DisplayPrefix string     `json:"display_prefix"`
	CreatedAt     time.Time  `json:"created_at"`
	LastUsedAt    *time.Time `json:"last_used_at"`
	RevokedAt     *time.Time `json:"revoked_at,omitempty"`
}

type tokenList struct {
	Tokens []tokenView `json:"tokens"`
}

func newTokenView(t store.APIToken) tokenView {
	return tokenView{ID: t.ID, Name: t.Name, DisplayPrefix: t.DisplayPrefix, CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt}
}

// listTokens lists the caller's tenant's active tokens.
func (h *handlers) listTokens(c *gin.Context) error {
	toks, err := h.deps.Store.ListAPITokens(c.Request.Context(), tenantOf(c).ID)
	if err != nil {
		return failed("could not list the API tokens", err)
	}
	out := tokenList{Tokens: make([]tokenView, 0, len(toks))}
	for _, t := range toks {
		out.Tokens = append(out.Tokens, newTokenView(t))
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// revokeToken revokes one of the caller's tenant's tokens; the token gets 401 from the next
// request on. A token may revoke itself (rotation: create the new one, then revoke the old one
// with either), but not the tenant's last active token: that would lock the tenant out until an
// operator runs `gitsec admin create-token`, so it answers 409 and operators use
// `gitsec admin revoke-token` when they really mean it.
func (h *handlers) revokeToken(c *gin.Context) error {
	t := tenantOf(c)
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return errNotFound("API token", c.Param("id"))
	}
	tok, err := h.deps.Store.RevokeAPIToken(c.Request.Context(), t.ID, id, store.KeepLastToken)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: "not_found", message: "API token " + id.String() + " does not exist or is already revoked"}
	case errors.Is(err, store.ErrLastToken):
		return errConflict("last_token", "API token "+id.String()+" is the tenant's last active token: create another first (POST /api/v1/tokens), then revoke this one")
	case err != nil:
		return failed("could not revoke the API token", err)
	}
	h.audit(c, t.ID, "api_token.revoked", "api_token", tok.ID.String(), map[string]string{"name": tok.Name, "display_prefix": tok.DisplayPrefix})
	c.JSON(http.StatusOK, newTokenView(tok))
	return nil
}
