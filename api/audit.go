package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
)

// audit records a change; failures are logged, never shown to the caller as a failed change.
func (h *handlers) audit(c *gin.Context, tenantID uuid.UUID, action, targetType, targetID string, details any) {
	raw, _ := json.Marshal(details)
	actor := actorOf(c)
	if err := h.deps.Store.RecordAudit(c.Request.Context(), store.AuditEvent{
		TenantID: tenantID, Actor: actor, Action: action, TargetType: targetType, TargetID: targetID, Details: raw,
	}); err != nil {
		h.deps.Logger.Error("record audit event", "action", action, "error", err)
	}
}

// listAuditEvents pages newest first; the cursor is the last event ID seen.
func (h *handlers) listAuditEvents(c *gin.Context) error {
	limit, err := intQuery(c, "limit", 50, 1, 200)
	if err != nil {
		return err
	}
	before, err := intQuery(c, "cursor", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	events, err := h.deps.Store.ListAuditEvents(c.Request.Context(), tenantOf(c).ID, int64(before), limit)
	if err != nil {
		return failed("could not list audit events", err)
	}
	resp := AuditEvents{AuditEvents: views(events, auditEventView)}
	if len(events) == limit {
		resp.NextCursor = strconv.FormatInt(events[len(events)-1].ID, 10)
	}
	c.JSON(http.StatusOK, resp)
	return nil
}
