// Package api is GitSec's thin HTTP API on Gin: it authenticates tenants, starts workflows and
// reads state for the dashboard. Every error it returns has the shape
// {"error":{"code":"...","message":"..."}}.
package api

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
)

// Store is what the API needs from the metadata store.
type Store interface {
	TenantByTokenHash(ctx context.Context, tokenSHA256 []byte) (store.Tenant, error)
	ListAuditEvents(ctx context.Context, tenantID uuid.UUID, beforeID int64, limit int) ([]store.AuditEvent, error)
	RecordAudit(ctx context.Context, ev store.AuditEvent) error
	IssueAPIToken(ctx context.Context, tenantID uuid.UUID, name string) (string, store.APIToken, error)
}

// Check is one dependency that /readyz reports on.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Deps are the API's collaborators.
type Deps struct {
	Store   Store
	Checks  []Check
	Logger  *slog.Logger
	Version string
}

func init() { gin.SetMode(gin.ReleaseMode) }

// NewHandler builds the HTTP handler with every route.
func NewHandler(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	h := &handlers{deps: d}
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

	v1 := r.Group("/api/v1", authenticate(d.Store))
	v1.GET("/me", h.me)
	v1.GET("/audit-events", h.listAuditEvents)
	v1.POST("/tokens", h.createToken)
	return r
}

type handlers struct {
	deps Deps
}
