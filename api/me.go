package api

import (
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
)

func (h *handlers) me(c *gin.Context) {
	t := tenantOf(c)
	c.JSON(http.StatusOK, gin.H{"tenant": gin.H{"id": t.ID, "name": t.Name, "created_at": t.CreatedAt}})
}

// listAuditEvents pages newest first; the cursor is the last event ID seen.
func (h *handlers) listAuditEvents(c *gin.Context) {
	limit, ok := intQuery(c, "limit", 50, 1, 200)
	if !ok {
		return
	}
	before, ok := intQuery(c, "cursor", 0, 0, 1<<62)
	if !ok {
		return
	}
	events, err := h.deps.Store.ListAuditEvents(c.Request.Context(), tenantOf(c).ID, int64(before), limit)
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not list audit events")
		return
	}
	resp := gin.H{"audit_events": nonNil(events)}
	if len(events) == limit {
		resp["next_cursor"] = strconv.FormatInt(events[len(events)-1].ID, 10)
	}
	c.JSON(http.StatusOK, resp)
}

func intQuery(c *gin.Context, name string, def, min, max int) (int, bool) {
	raw := c.Query(name)
	if raw == "" {
		return def, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < min || n > max {
		abortError(c, http.StatusBadRequest, "invalid_parameter", "query parameter "+name+"="+strconv.Quote(raw)+" must be an integer between "+strconv.Itoa(min)+" and "+strconv.Itoa(max))
		return 0, false
	}
	return n, true
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
