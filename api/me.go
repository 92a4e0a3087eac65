package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/gitsec/gitsec/internal/store"
)

func (h *handlers) me(c *gin.Context) error {
	t := tenantOf(c)
	alerts, err := h.alerts(c.Request.Context(), t.ID)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, Me{Tenant: tenantView(t), OpenAlerts: len(alerts)})
	return nil
}

func intQuery(c *gin.Context, name string, def, min, max int) (int, error) {
	raw := c.Query(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < min || n > max {
		return 0, errInvalid("invalid_parameter", "query parameter "+name+"="+strconv.Quote(raw)+" must be an integer between "+strconv.Itoa(min)+" and "+strconv.Itoa(max))
	}
	return n, nil
}

type createTokenRequest struct {
	Name string `json:"name"`
}

// createToken issues another API token for the caller's tenant; the response is the only time
// the token is shown.
func (h *handlers) createToken(c *gin.Context) error {
	var req createTokenRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if len(req.Name) > 100 {
		return errInvalid("invalid_field", "field \"name\" must be at most 100 characters")
	}
	ctx := c.Request.Context()
	t := tenantOf(c)
	token, rec, err := h.deps.Store.IssueAPIToken(ctx, t.ID, req.Name)
	if err != nil {
		return failed("could not create the token", err)
	}
	details, _ := json.Marshal(map[string]string{"token_id": rec.ID.String(), "name": rec.Name, "display_prefix": rec.DisplayPrefix})
	if err := h.deps.Store.RecordAudit(ctx, store.AuditEvent{TenantID: t.ID, Actor: actorOf(c), Action: "api_token.created", TargetType: "api_token", TargetID: rec.ID.String(), Details: details}); err != nil {
		h.deps.Logger.Error("record audit event", "action", "api_token.created", "error", err)
	}
	c.JSON(http.StatusCreated, CreatedToken{
		Token:         token,
		ID:            rec.ID,
		Name:          rec.Name,
		DisplayPrefix: rec.DisplayPrefix,
		CreatedAt:     rec.CreatedAt,
		Note:          "store this token now: it is not shown again",
	})
	return nil
}
