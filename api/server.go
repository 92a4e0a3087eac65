// Package api is GitSec's thin HTTP API on Gin: it authenticates tenants, starts workflows and
// reads state for the dashboard. Every error it returns has the shape
// {"error":{"code":"...","message":"..."}}.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.temporal.io/sdk/client"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/dashboard"
	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/webhooks"
	"github.com/gitsec/gitsec/internal/workflowstarts"
)

// Check is one dependency that /readyz reports on.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Deps are the API's collaborators.
type Deps struct {
	Store   *store.Store
	Checks  []Check
	Logger  *slog.Logger
	Version string
	// Temporal starts and queries workflows; TaskQueue is where they run.
	Temporal  client.Client
	TaskQueue string
	// Box encrypts OAuth tokens before they are stored.
	Box *secretbox.Box
	// BitbucketOAuth is the read-only backup app; nil when no consumer is configured.
	BitbucketOAuth *oauth2.Config
	// RestoreOAuth is the Restore App (write access); nil: restores into Bitbucket are off.
	RestoreOAuth *oauth2.Config
	// Clients checks restore targets with the Restore App's grant (nil: restores are off).
	Clients *providerclient.Factory
	// BitbucketAPIURL is the REST host the callback asks which account was connected.
	BitbucketAPIURL string
	// OAuthHTTPClient is used for the code exchange and that question (tests and the
	// emulator); nil = default.
	OAuthHTTPClient *http.Client
	// Backups configures the backup workflows the API wakes.
	Backups backupqueue.Settings
	// Webhooks acts on stored webhook deliveries; nil leaves every row to another process's
	// re-driver.
	Webhooks *webhooks.Dispatcher
	// OAuthStateTTL bounds how long a connect link stays valid (default 15 minutes).
	OAuthStateTTL time.Duration
	// Metrics is the process's registry, served at GET /metrics without a token (like
	// /healthz: scrapers carry no tenant token; keep the listener off the public internet or
	// filter /metrics at the proxy). Nil: no /metrics route.
	Metrics *metrics.Metrics
	// Archive is the backup storage that the snapshot routes read exports from; nil: those
	// routes answer 503.
	Archive *archive.Store
	// PublicURL is where browsers reach GitSec (GITSEC_PUBLIC_URL); an https:// one makes the
	// dashboard's cookies Secure.
	PublicURL string
	// ScratchDir is where snapshot downloads are prepared on disk before they are streamed
	// (each in its own temporary directory, removed afterwards); "" is the system's temp dir.
	ScratchDir string
}

func init() { gin.SetMode(gin.ReleaseMode) }

// NewHandler builds the HTTP handler with every route.
func NewHandler(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.OAuthStateTTL == 0 {
		d.OAuthStateTTL = 15 * time.Minute
	}
	site, err := dashboard.New()
	if err != nil {
		// The assets are embedded at build time: a failure is a broken build, not bad input.
		panic(err)
	}
	h := &handlers{
		site:   site,
		deps:   d,
		states: &stateSigner{store: d.Store, box: d.Box},
		starts: &workflowstarts.Starter{Temporal: d.Temporal, TaskQueue: d.TaskQueue, Backups: d.Backups, Logger: d.Logger},
	}
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(requestID(), requestLogger(d.Logger), recoverer(d.Logger))
	r.NoRoute(func(c *gin.Context) {
		abortError(c, http.StatusNotFound, "not_found", "no route for "+c.Request.Method+" "+c.Request.URL.Path)
	})
	r.NoMethod(func(c *gin.Context) {
		abortError(c, http.StatusMethodNotAllowed, "method_not_allowed", c.Request.Method+" is not allowed on "+c.Request.URL.Path)
	})

	r.GET("/healthz", h.healthz)
	r.GET("/readyz", h.readyz)
	if d.Metrics != nil {
		r.GET("/metrics", gin.WrapH(d.Metrics.Handler()))
	}

	h.routeDashboard(r)
	r.GET("/api/v1/openapi.json", serveOpenAPI)
	v1 := r.Group("/api/v1", h.authenticate)
	v1.GET("/me", h.handle(h.me))
	v1.GET("/audit-events", h.handle(h.listAuditEvents))
	v1.POST("/tokens", h.handle(h.createToken))
	v1.GET("/tokens", h.handle(h.listTokens))
	v1.DELETE("/tokens/:id", h.handle(h.revokeToken))

	// Deliveries carry no bearer token: the hook's secret authenticates them.
	r.POST("/webhooks/bitbucket/:installationID", h.receiveBitbucketWebhook)

	r.GET("/oauth/bitbucket/callback", h.handleWith(callbackError, h.bitbucketCallback))
	v1.POST("/installations/bitbucket/connect", h.handle(h.connectBitbucket))
	v1.POST("/installations/bitbucket/complete", h.handle(h.completeBitbucketConnect))
	v1.GET("/installations", h.handle(h.listInstallations))
	v1.GET("/installations/:id", h.handle(h.getInstallation))
	v1.DELETE("/installations/:id", h.handle(h.deleteInstallation))
	v1.POST("/installations/:id/sync", h.handle(h.syncInstallation))
	v1.GET("/installations/:id/webhook-deliveries", h.handle(h.listWebhookDeliveries))
	v1.POST(`/installations/:id/repositories\:bulk`, h.handle(h.bulkSetIncluded))
	v1.GET("/installations/:id/retention-policy", h.handle(h.getInstallationRetention))
	v1.PUT("/installations/:id/retention-policy", h.handle(h.putInstallationRetention))
	v1.DELETE("/installations/:id/retention-policy", h.handle(h.deleteInstallationRetention))
	v1.POST("/installations/:id/retention-runs", h.handle(h.startRetentionRun))
	v1.POST("/installations/:id/restore-app/connect", h.handle(h.connectRestoreApp))
	v1.GET("/installations/:id/restore-app", h.handle(h.getRestoreApp))
	v1.DELETE("/installations/:id/restore-app", h.handle(h.deleteRestoreApp))
	r.GET("/oauth/bitbucket/restore/callback", h.handleWith(callbackError, h.restoreCallback))
	v1.POST("/restores", h.handle(h.createRestore))
	v1.GET("/restores", h.handle(h.listRestores))
	v1.GET("/restores/:id", h.handle(h.getRestore))
	v1.POST("/restores/:id/cancel", h.handle(h.cancelRestore))
	v1.GET("/repositories", h.handle(h.listRepositories))
	v1.GET("/repositories/:id", h.handle(h.getRepository))
	v1.PATCH("/repositories/:id", h.handle(h.patchRepository))
	v1.POST("/repositories/:id/backups", h.handle(h.requestBackup))
	v1.GET("/repositories/:id/snapshots", h.handle(h.listSnapshots))
	v1.GET("/repositories/:id/backup-status", h.handle(h.backupStatus))
	v1.GET("/repositories/:id/retention", h.handle(h.getRepositoryRetention))
	v1.PUT("/repositories/:id/retention-policy", h.handle(h.putRepositoryRetention))
	v1.DELETE("/repositories/:id/retention-policy", h.handle(h.deleteRepositoryRetention))
	v1.GET("/repositories/:id/retention-plan", h.handle(h.getRetentionPlan))
	v1.POST("/repositories/:id/drills", h.handle(h.requestDrill))
	v1.GET("/repositories/:id/drills", h.handle(h.listDrills))
	v1.GET("/drills/:id", h.handle(h.getDrill))
	v1.GET("/alerts", h.handle(h.listAlerts))
	v1.GET("/activity", h.handle(h.activity))
	v1.GET("/snapshots/:id", h.handle(h.getSnapshot))
	v1.GET("/snapshots/:id/pull-requests", h.handle(h.listPullRequests))
	v1.GET("/snapshots/:id/pull-requests/:number", h.handle(h.getPullRequest))
	v1.GET("/snapshots/:id/metadata", h.handle(h.getMetadata))
	v1.GET("/snapshots/:id/archive", h.handle(h.downloadArchive))
	v1.PUT("/snapshots/:id/legal-hold", h.handle(h.setLegalHold))
	v1.DELETE("/snapshots/:id/legal-hold", h.handle(h.releaseLegalHold))
	return r
}

type handlers struct {
	site   *dashboard.Site
	deps   Deps
	states *stateSigner
	starts *workflowstarts.Starter
}
