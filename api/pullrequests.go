package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/store"
)

// The pull request and metadata routes read a snapshot's exports from object storage through
// its manifest; Postgres only says which snapshots the caller's tenant owns.

// maxQueryLength bounds the q parameter of the pull request listing.
const maxQueryLength = 200

// snapshotManifest finds the snapshot the :id parameter names among the caller's tenant's
// (404 otherwise, as GET /snapshots/{id}) and reads its manifest.
func (h *handlers) snapshotManifest(c *gin.Context) (*archive.Manifest, error) {
	if h.deps.Archive == nil {
		return nil, &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "this API has no backup storage configured"}
	}
	sn, err := h.tenantSnapshot(c)
	if err != nil {
		return nil, err
	}
	m, err := h.loadManifest(c.Request.Context(), sn)
	if err != nil {
		return nil, failed("could not read snapshot "+sn.ID+" from backup storage", err)
	}
	return m, nil
}

func (h *handlers) tenantSnapshot(c *gin.Context) (store.Snapshot, error) {
	sn, err := h.deps.Store.GetSnapshot(c.Request.Context(), tenantOf(c).ID, c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		return store.Snapshot{}, errNotFound("snapshot", c.Param("id"))
	}
	if err != nil {
		return store.Snapshot{}, failed("could not read the snapshot", err)
	}
	return sn, nil
}

// loadManifest reads a recorded snapshot's manifest from storage, under the key of its tenant
// and repository.
func (h *handlers) loadManifest(ctx context.Context, sn store.Snapshot) (*archive.Manifest, error) {
	r, err := h.deps.Store.GetRepository(ctx, sn.TenantID, sn.RepositoryID)
	if err != nil {
		return nil, err
	}
	key, err := archive.NewRepoKey(sn.TenantID.String(), r.ProviderUUID)
	if err != nil {
		return nil, err
	}
	return h.deps.Archive.LoadManifest(ctx, key, sn.ID)
}

// exportFailure maps the errors of reading an export.
func exportFailure(err error, m *archive.Manifest, what string) error {
	switch {
	case errors.Is(err, archive.ErrNoExport):
		return &apiError{status: http.StatusNotFound, code: "no_export", message: "snapshot " + m.ID + " has no " + what +
			" export: it was taken before exports existed (or before the first export completed)"}
	case errors.Is(err, context.Canceled):
		return failed("could not read the "+what+" export", err)
	}
	return failed("could not read the "+what+" export of snapshot "+m.ID, err)
}

func (h *handlers) listPullRequests(c *gin.Context) error {
	state := c.Query("state")
	if state != "" {
		s, ok := archive.NormalizePullRequestState(state)
		if !ok {
			return errInvalid("invalid_parameter", "query parameter state="+strconv.Quote(state)+" must be one of "+strings.Join(archive.PullRequestStates, ", "))
		}
		state = s
	}
	q := c.Query("q")
	if len(q) > maxQueryLength {
		return errInvalid("invalid_parameter", "query parameter q is longer than "+strconv.Itoa(maxQueryLength)+" bytes")
	}
	limit, err := intQuery(c, "limit", 50, 1, 200)
	if err != nil {
		return err
	}
	var after int64
	if raw := c.Query("cursor"); raw != "" {
		after, err = strconv.ParseInt(raw, 10, 64)
		if err != nil || after <= 0 {
			return errInvalid("invalid_parameter", "query parameter cursor="+strconv.Quote(raw)+" is not a cursor this API returned")
		}
	}
	m, err := h.snapshotManifest(c)
	if err != nil {
		return err
	}
	resp := PullRequests{PullRequests: []PullRequestSummary{}}
	more := false
	e, err := h.deps.Archive.WalkSnapshotPullRequests(c.Request.Context(), m, func(r *archive.PullRequestRecord) error {
		if r.ID <= after || (state != "" && r.State != state) || !r.Matches(q) {
			return nil
		}
		if len(resp.PullRequests) == limit {
			more = true
			return archive.ErrStopWalk
		}
		resp.PullRequests = append(resp.PullRequests, pullRequestSummaryView(r))
		return nil
	})
	if err != nil {
		return exportFailure(err, m, "pull request")
	}
	if more {
		resp.NextCursor = strconv.FormatInt(resp.PullRequests[len(resp.PullRequests)-1].ID, 10)
	}
	resp.Export = exportStatusView(e)
	c.JSON(http.StatusOK, resp)
	return nil
}

func (h *handlers) getPullRequest(c *gin.Context) error {
	number, err := strconv.ParseInt(c.Param("number"), 10, 64)
	if err != nil || number <= 0 {
		return errNotFound("pull request", c.Param("number"))
	}
	m, err := h.snapshotManifest(c)
	if err != nil {
		return err
	}
	pr, e, err := h.deps.Archive.FindPullRequest(c.Request.Context(), m, number)
	if errors.Is(err, archive.ErrNoPullRequest) {
		return &apiError{status: http.StatusNotFound, code: "not_found", message: "pull request " + c.Param("number") + " is not in snapshot " + m.ID}
	}
	if err != nil {
		return exportFailure(err, m, "pull request")
	}
	c.JSON(http.StatusOK, PullRequestDetail{PullRequest: pullRequestView(pr), Export: exportStatusView(e)})
	return nil
}

func (h *handlers) getMetadata(c *gin.Context) error {
	m, err := h.snapshotManifest(c)
	if err != nil {
		return err
	}
	md, err := h.deps.Archive.LoadMetadata(c.Request.Context(), m)
	if err != nil {
		return exportFailure(err, m, "metadata")
	}
	c.JSON(http.StatusOK, Metadata{Metadata: md})
	return nil
}

// snapshotPullRequests is the pull request export of a recorded snapshot for GET
// /snapshots/{id}, nil when storage is not configured, the snapshot has none or its manifest
// cannot be read (logged: the database row is still worth answering).
func (h *handlers) snapshotPullRequests(c *gin.Context, sn store.Snapshot) *ExportStatus {
	if h.deps.Archive == nil {
		return nil
	}
	m, err := h.loadManifest(c.Request.Context(), sn)
	if err != nil {
		h.deps.Logger.WarnContext(c.Request.Context(), "snapshot manifest unreadable", "snapshot", sn.ID, "error", err.Error())
		return nil
	}
	e := m.FindExport(archive.ExportPullRequests)
	if e == nil {
		return nil
	}
	v := exportStatusView(e)
	return &v
}
