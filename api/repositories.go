package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
)

func (h *handlers) listRepositories(c *gin.Context) {
	f := store.RepositoryFilter{Workspace: c.Query("workspace"), Query: c.Query("q"), Cursor: c.Query("cursor")}
	if raw := c.Query("installation"); raw != "" {
		id, err := uuid.Parse(raw)
		if err != nil {
			abortError(c, http.StatusBadRequest, "invalid_parameter", "query parameter installation="+strconv.Quote(raw)+" is not an installation ID")
			return
		}
		f.InstallationID = &id
	}
	if raw := c.Query("included"); raw != "" {
		b, err := strconv.ParseBool(raw)
		if err != nil {
			abortError(c, http.StatusBadRequest, "invalid_parameter", "query parameter included="+strconv.Quote(raw)+" must be true or false")
			return
		}
		f.Included = &b
	}
	limit, ok := intQuery(c, "limit", 50, 1, 500)
	if !ok {
		return
	}
	f.Limit = limit
	repos, next, err := h.deps.Store.ListRepositories(c.Request.Context(), tenantOf(c).ID, f)
	if errors.Is(err, store.ErrBadCursor) {
		abortError(c, http.StatusBadRequest, "invalid_parameter", "query parameter cursor is not a cursor this API returned")
		return
	}
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not list repositories")
		return
	}
	resp := gin.H{"repositories": nonNil(repos)}
	if next != "" {
		resp["next_cursor"] = next
	}
	c.JSON(http.StatusOK, resp)
}

func (h *handlers) repositoryParam(c *gin.Context) (uuid.UUID, bool) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		abortError(c, http.StatusNotFound, "not_found", "repository "+c.Param("id")+" does not exist")
		return uuid.Nil, false
	}
	return id, true
}

func (h *handlers) getRepository(c *gin.Context) {
	id, ok := h.repositoryParam(c)
	if !ok {
		return
	}
	r, err := h.deps.Store.GetRepository(c.Request.Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		abortError(c, http.StatusNotFound, "not_found", "repository "+id.String()+" does not exist")
		return
	}
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not read the repository")
		return
	}
	c.JSON(http.StatusOK, gin.H{"repository": r})
}

type patchRepositoryRequest struct {
	Included *bool `json:"included"`
}

// patchRepository includes or excludes one repository. Excluding stops future backups and
// keeps every existing snapshot.
func (h *handlers) patchRepository(c *gin.Context) {
	id, ok := h.repositoryParam(c)
	if !ok {
		return
	}
	var req patchRepositoryRequest
	if !decodeJSON(c, &req) {
		return
	}
	if req.Included == nil {
		abortError(c, http.StatusBadRequest, "invalid_field", `field "included" (true or false) is required`)
		return
	}
	t := tenantOf(c)
	if *req.Included {
		r, ok := h.loadRepository(c)
		if !ok || !installationBacksUp(c, r) {
			return
		}
	}
	r, err := h.deps.Store.SetRepositoryIncluded(c.Request.Context(), t.ID, id, *req.Included)
	if errors.Is(err, store.ErrNotFound) {
		abortError(c, http.StatusNotFound, "not_found", "repository "+id.String()+" does not exist")
		return
	}
	if err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not update the repository")
		return
	}
	action := "repository.excluded"
	if *req.Included {
		action = "repository.included"
	}
	h.audit(c, t.ID, action, "repository", id.String(), gin.H{"full_name": r.FullName})
	c.JSON(http.StatusOK, gin.H{"repository": r})
}
