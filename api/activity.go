package api

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/gitsec/gitsec/internal/store"
)

// maxFailingListed caps the failing list of GET /api/v1/activity: past a hundred, the count
// (failing_total) says more than the rows, and the repository list filters status=failed.
const maxFailingListed = 100

// activity answers the tenant's recent backups across its repositories, failures first: the
// repositories whose last backup failed (not paged, capped) and the latest snapshots (paged).
func (h *handlers) activity(c *gin.Context) error {
	limit, err := intQuery(c, "limit", 50, 1, 200)
	if err != nil {
		return err
	}
	ctx, tenantID := c.Request.Context(), tenantOf(c).ID
	recent, next, err := h.deps.Store.RecentSnapshots(ctx, tenantID, c.Query("cursor"), limit)
	if errors.Is(err, store.ErrBadCursor) {
		return errInvalid("invalid_parameter", "query parameter cursor is not a cursor this API returned")
	}
	if err != nil {
		return failed("could not list recent backups", err)
	}
	failing, total, err := h.deps.Store.FailingRepositories(ctx, tenantID, maxFailingListed)
	if err != nil {
		return failed("could not list failing repositories", err)
	}
	c.JSON(http.StatusOK, RecentActivity{
		Failing: views(failing, failingView), FailingTotal: total,
		Recent: views(recent, recentBackupView), NextCursor: next,
	})
	return nil
}
