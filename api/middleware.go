package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/websession"
)

const (
	ctxRequestID   = "request_id"
	ctxTenant      = "tenant"
	ctxTokenPrefix = "token_prefix"
	// ctxActor names a caller that is not an API token (a dashboard session) in audit events.
	ctxActor = "actor"
	// ctxErrorCode is the code of an error answer, for the request's log line.
	ctxErrorCode = "error_code"
)

func requestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader("X-Request-Id")
		if id == "" || len(id) > 64 {
			id = uuid.NewString()
		}
		c.Set(ctxRequestID, id)
		c.Header("X-Request-Id", id)
		c.Next()
	}
}

// requestLogger logs one line per request. It logs the route template, never the raw query or
// headers: OAuth callbacks carry codes in the query and Authorization carries tokens.
func requestLogger(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		attrs := []any{
			"method", c.Request.Method,
			"route", route,
			"status", c.Writer.Status(),
			"duration_ms", time.Since(start).Milliseconds(),
			"request_id", c.GetString(ctxRequestID),
		}
		if code := c.GetString(ctxErrorCode); code != "" {
			attrs = append(attrs, "error_code", code)
		}
		if t, ok := c.Get(ctxTenant); ok {
			attrs = append(attrs, "tenant", t.(store.Tenant).Name)
		}
		level := slog.LevelInfo
		if c.Writer.Status() >= 500 {
			level = slog.LevelError
		}
		log.Log(c.Request.Context(), level, "http request", attrs...)
	}
}

func recoverer(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					// A handler that already sent its status cuts the connection on purpose
					// (a download that went wrong midway); net/http does that quietly.
					panic(r)
				}
				log.Error("panic in handler", "route", c.FullPath(), "request_id", c.GetString(ctxRequestID), "panic", r)
				abortError(c, http.StatusInternalServerError, "internal", "internal error; request id "+c.GetString(ctxRequestID))
			}
		}()
		c.Next()
	}
}

// authenticate resolves "Authorization: Bearer gsk_..." to a tenant; a request without one but
// with a dashboard session cookie is a browser's (authenticateSession).
func (h *handlers) authenticate(c *gin.Context) {
	if c.GetHeader("Authorization") == "" {
		if ck, err := c.Request.Cookie(websession.CookieName); err == nil && ck.Value != "" {
			h.authenticateSession(c)
			return
		}
	}
	scheme, token, ok := strings.Cut(c.GetHeader("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		abortError(c, http.StatusUnauthorized, "unauthorized", "missing bearer token: send Authorization: Bearer gsk_...")
		return
	}
	token = strings.TrimSpace(token)
	if apitoken.Check(token) != nil {
		abortError(c, http.StatusUnauthorized, "unauthorized", "invalid API token")
		return
	}
	tenant, err := h.deps.Store.TenantByTokenHash(c.Request.Context(), apitoken.Hash(token))
	if errors.Is(err, store.ErrNotFound) {
		abortError(c, http.StatusUnauthorized, "unauthorized", "invalid API token")
		return
	}
	if err != nil {
		h.fail(c, abortError, failed("could not check the API token", err))
		return
	}
	c.Set(ctxTenant, tenant)
	c.Set(ctxTokenPrefix, apitoken.DisplayPrefix(token))
	c.Next()
}

func tenantOf(c *gin.Context) store.Tenant {
	return c.MustGet(ctxTenant).(store.Tenant)
}

// actorOf names the caller in audit events: its token's display prefix, its dashboard session,
// or the OAuth callback (which carries neither).
func actorOf(c *gin.Context) string {
	if a := c.GetString(ctxActor); a != "" {
		return a
	}
	if p := tokenPrefixOf(c); p != "" {
		return "api_token:" + p
	}
	return "oauth_callback"
}

// tokenPrefixOf names the calling token in audit events without revealing it.
func tokenPrefixOf(c *gin.Context) string { return c.GetString(ctxTokenPrefix) }
