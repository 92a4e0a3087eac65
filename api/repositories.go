package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
)

func (h *handlers) listRepositories(c *gin.Context) error {
	f := store.RepositoryFilter{Workspace: c.Query("workspace"), Query: c.Query("q"), Cursor: c.Query("cursor")}
	if raw := c.Query("installation"); raw != "" {
		id, err := uuid.Parse(raw)
		if err != nil {
			return errInvalid("invalid_parameter", "query parameter installation="+strconv.Quote(raw)+" is not an installation ID")
		}
		f.InstallationID = &id
	}
	if raw := c.Query("included"); raw != "" {
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errInvalid("invalid_parameter", "query parameter included="+strconv.Quote(raw)+" must be true or false")
		}
		f.Included = &b
	}
	if raw := c.Query("status"); raw != "" {
		statuses, err := backupStatusFilter(raw)
		if err != nil {
			return err
		}
		f.BackupStatuses = statuses
	}
	limit, err := intQuery(c, "limit", 50, 1, 500)
	if err != nil {
		return err
	}
	f.Limit = limit
	page, err := h.deps.Store.ListRepositories(c.Request.Context(), tenantOf(c).ID, f)
	if errors.Is(err, store.ErrBadCursor) {
		return errInvalid("invalid_parameter", "query parameter cursor is not a cursor this API returned")
	}
	if err != nil {
		return failed("could not list repositories", err)
	}
	resp := Repositories{Repositories: views(page.Repositories, repositoryView), Total: page.Total, NextCursor: page.NextCursor}
	if err := h.withRepositoryDrills(c.Request.Context(), tenantOf(c).ID, resp.Repositories); err != nil {
		return err
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

// backupStatusFilters map the values of GET /repositories?status= to the last_backup_status
// values they select. "queued" is an included repository waiting for its first backup
// (pending_backup); "succeeded" includes a run that found nothing to back up ("unchanged",
// stored only while the repository has no snapshot, such as an empty one). "running" is not
// among them: only the backup workflow knows a run is under way (GET
// /repositories/{id}/backup-status asks it), the row never says so.
var backupStatusFilters = map[string][]string{
	"never":     {domain.BackupNever},
	"queued":    {domain.BackupPending},
	"succeeded": {domain.BackupSucceeded, domain.BackupUnchanged},
	"failed":    {domain.BackupFailed},
}

// backupStatusFilterNames lists backupStatusFilters' keys in the order the messages and the
// OpenAPI document name them.
var backupStatusFilterNames = []string{"never", "queued", "succeeded", "failed"}

// backupStatusFilter parses status=a,b into the row values it selects.
func backupStatusFilter(raw string) ([]string, error) {
	var out []string
	for _, v := range strings.Split(raw, ",") {
		statuses, ok := backupStatusFilters[strings.TrimSpace(v)]
		if !ok {
			msg := "query parameter status=" + strconv.Quote(raw) + ": " + strconv.Quote(v) + " is not a backup status; use one or more (comma-separated) of " +
				strings.Join(backupStatusFilterNames, ", ")
			if v == "running" {
				msg += " (a running backup is only known live: GET /api/v1/repositories/{id}/backup-status)"
			}
			return nil, errInvalid("invalid_parameter", msg)
		}
		out = append(out, statuses...)
	}
	return out, nil
}

func (h *handlers) repositoryParam(c *gin.Context) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return uuid.Nil, errNotFound("repository", c.Param("id"))
	}
	return id, nil
}

func (h *handlers) getRepository(c *gin.Context) error {
	id, err := h.repositoryParam(c)
	if err != nil {
		return err
	}
	r, err := h.deps.Store.GetRepository(c.Request.Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("repository", id.String())
	}
	if err != nil {
		return failed("could not read the repository", err)
	}
	return h.respondRepository(c, r)
}

type patchRepositoryRequest struct {
	Included *bool `json:"included"`
}

// patchRepository includes or excludes one repository. Excluding stops future backups and
// keeps every existing snapshot.
func (h *handlers) patchRepository(c *gin.Context) error {
	id, err := h.repositoryParam(c)
	if err != nil {
		return err
	}
	var req patchRepositoryRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Included == nil {
		return errInvalid("invalid_field", `field "included" (true or false) is required`)
	}
	t := tenantOf(c)
	if *req.Included {
		r, err := h.loadRepository(c)
		if err != nil {
			return err
		}
		if err := installationBacksUp(r); err != nil {
			return err
		}
	}
	r, err := h.deps.Store.SetRepositoryIncluded(c.Request.Context(), t.ID, id, *req.Included)
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("repository", id.String())
	}
	if err != nil {
		return failed("could not update the repository", err)
	}
	action := "repository.excluded"
	if *req.Included {
		action = "repository.included"
	}
	h.audit(c, t.ID, action, "repository", id.String(), gin.H{"full_name": r.FullName})
	return h.respondRepository(c, r)
}

// respondRepository answers one repository with its last drill.
func (h *handlers) respondRepository(c *gin.Context, r store.Repository) error {
	views := []Repository{repositoryView(r)}
	if err := h.withRepositoryDrills(c.Request.Context(), r.TenantID, views); err != nil {
		return err
	}
	c.JSON(http.StatusOK, RepositoryDetail{Repository: views[0]})
	return nil
}

// Bounds of a bulk request: every pattern is matched against every repository name, so an
// unbounded list (a 1 MiB body kept a core busy for 16-31 s) is refused before any work.
// Names are "workspace/slug", each part at most 62 characters in Bitbucket, so 256 bytes leave
// room for any useful glob.
const (
	maxBulkPatterns      = 100
	maxBulkPatternLength = 256
	maxBulkBody          = 64 << 10
)

type bulkRequest struct {
	Include         []string `json:"include"`
	Exclude         []string `json:"exclude"`
	DefaultIncluded *bool    `json:"default_included"`
}

// bulkSetIncluded applies glob patterns over "workspace/slug": includes first, then excludes,
// so an exclude always wins. default_included decides for repositories discovered later.
func (h *handlers) bulkSetIncluded(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	var req bulkRequest
	if err := decodeJSONLimit(c, &req, maxBulkBody); err != nil {
		return err
	}
	if len(req.Include) == 0 && len(req.Exclude) == 0 && req.DefaultIncluded == nil {
		return errInvalid("invalid_field", `give at least one of "include", "exclude" or "default_included"`)
	}
	for _, f := range []struct {
		name     string
		patterns []string
	}{{"include", req.Include}, {"exclude", req.Exclude}} {
		if len(f.patterns) > maxBulkPatterns {
			return errInvalid("too_many_patterns", fmt.Sprintf("field %q holds %d patterns; at most %d are allowed per request", f.name, len(f.patterns), maxBulkPatterns))
		}
	}
	for _, p := range append(append([]string{}, req.Include...), req.Exclude...) {
		if len(p) > maxBulkPatternLength {
			return errInvalid("pattern_too_long", fmt.Sprintf("pattern %q… is %d bytes; at most %d are allowed", p[:32], len(p), maxBulkPatternLength))
		}
		if _, err := path.Match(p, ""); err != nil || p == "" {
			return errInvalid("invalid_pattern", fmt.Sprintf("pattern %q is not a valid glob over workspace/slug", p))
		}
	}
	ctx := c.Request.Context()
	names, err := h.deps.Store.RepositoryNames(ctx, inst.TenantID, inst.ID)
	if err != nil {
		return failed("could not list repositories", err)
	}
	include, exclude := matchAll(names, req.Include), matchAll(names, req.Exclude)
	excluded := map[string]bool{}
	for _, n := range exclude {
		excluded[n] = true
	}
	var onlyInclude []string
	for _, n := range include {
		if !excluded[n] {
			onlyInclude = append(onlyInclude, n)
		}
	}
	result, err := h.applyInclusion(ctx, inst, onlyInclude, exclude, req.DefaultIncluded)
	if err != nil {
		return failed("could not update the repositories", err)
	}
	h.audit(c, inst.TenantID, "repositories.bulk_inclusion", "installation", inst.ID.String(), gin.H{
		"include": req.Include, "exclude": req.Exclude, "default_included": req.DefaultIncluded, "result": result,
	})
	c.JSON(http.StatusOK, result)
	return nil
}

func (h *handlers) applyInclusion(ctx context.Context, inst store.Installation, include, exclude []string, defaultIncluded *bool) (BulkInclusion, error) {
	nIn, err := h.deps.Store.SetIncludedByFullName(ctx, inst.TenantID, inst.ID, include, true)
	if err != nil {
		return BulkInclusion{}, err
	}
	nOut, err := h.deps.Store.SetIncludedByFullName(ctx, inst.TenantID, inst.ID, exclude, false)
	if err != nil {
		return BulkInclusion{}, err
	}
	result := BulkInclusion{
		MatchedInclude: len(include), MatchedExclude: len(exclude),
		ChangedToIncluded: nIn, ChangedToExcluded: nOut,
	}
	if defaultIncluded != nil {
		if err := h.deps.Store.SetInstallationDefaultIncluded(ctx, inst.TenantID, inst.ID, *defaultIncluded); err != nil {
			return BulkInclusion{}, err
		}
		result.DefaultIncluded = defaultIncluded
	}
	return result, nil
}

func matchAll(names, patterns []string) []string {
	var out []string
	for _, n := range names {
		for _, p := range patterns {
			if ok, _ := path.Match(p, n); ok {
				out = append(out, n)
				break
			}
		}
	}
	return out
}
