package api

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/apitoken"
	"github.com/gitsec/gitsec/internal/dashboard"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/websession"
)

// The dashboard is a thin client of /api/v1: the server only signs browsers in and out and
// serves one shell page plus hashed static files; every screen's data comes from the same JSON
// routes scripts use, authenticated by the session cookie instead of a bearer token.

// dashboardPaths are the screens; each serves the shell, which renders the screen. Keep in step
// with the router in internal/dashboard/assets/static/app.js.
var dashboardPaths = []string{
	"/", "/repositories/add-provider", "/repositories/bitbucket", "/repositories/bitbucket/:id",
	"/activity", "/restores", "/audit-log", "/settings/api-tokens", "/api-docs",
}

// signInCookie carries the sign-in form's CSRF token (double submit): without it another site
// could sign a browser into the attacker's tenant by posting the attacker's token.
const signInCookie = "gitsec_signin"

func (h *handlers) routeDashboard(r *gin.Engine) {
	r.GET("/signin", h.signInPage)
	r.POST("/signin", h.signInWithToken)
	r.GET(websession.LoginLinkPath, h.signInWithLink)
	r.POST("/signout", h.signOut)
	r.GET(dashboard.AssetPrefix+":name", h.dashboardAsset)
	for _, p := range dashboardPaths {
		r.GET(p, h.dashboardPage)
	}
}

// pageHeaders are set on every HTML page: no caching (it carries the CSRF token), no framing,
// no sniffing, and the CSP that keeps data from running as script.
func pageHeaders(c *gin.Context) {
	c.Header("Content-Security-Policy", dashboard.ContentSecurityPolicy)
	c.Header("Cache-Control", "no-store")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("X-Frame-Options", "DENY")
	c.Header("Referrer-Policy", "same-origin")
}

func (h *handlers) dashboardAsset(c *gin.Context) {
	a, ok := h.site.Asset(c.Param("name"))
	if !ok {
		abortError(c, http.StatusNotFound, "not_found", "no dashboard asset "+c.Param("name"))
		return
	}
	// The name carries the content's hash, so a new build is a new name: cache for a year.
	c.Header("Cache-Control", "public, max-age=31536000, immutable")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Data(http.StatusOK, a.ContentType, a.Content)
}

// session resolves the request's session cookie; ok is false without a live session.
func (h *handlers) session(c *gin.Context) (store.Session, string, bool) {
	ck, err := c.Request.Cookie(websession.CookieName)
	if err != nil || ck.Value == "" {
		return store.Session{}, "", false
	}
	sess, err := h.deps.Store.SessionByHash(c.Request.Context(), websession.Hash(ck.Value), time.Now())
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			h.deps.Logger.ErrorContext(c.Request.Context(), "resolve session", "error", err, "request_id", c.GetString(ctxRequestID))
		}
		return store.Session{}, "", false
	}
	return sess, ck.Value, true
}

func (h *handlers) dashboardPage(c *gin.Context) {
	pageHeaders(c)
	sess, secret, ok := h.session(c)
	if !ok {
		c.Redirect(http.StatusSeeOther, "/signin?next="+url.QueryEscape(c.Request.URL.RequestURI()))
		return
	}
	c.Set(ctxTenant, sess.Tenant)
	status := http.StatusOK
	if c.FullPath() == "/repositories/bitbucket/:id" {
		// Another tenant's repository is "not found", as in the API: the page says so with a 404.
		id, err := uuid.Parse(c.Param("id"))
		if err == nil {
			_, err = h.deps.Store.GetRepository(c.Request.Context(), sess.Tenant.ID, id)
		}
		if err != nil {
			status = http.StatusNotFound
		}
	}
	c.Status(status)
	c.Header("Content-Type", htmlContentType)
	if err := h.site.RenderApp(c.Writer, dashboard.AppPage{Tenant: sess.Tenant.Name, CSRFToken: websession.CSRFToken(secret), Version: h.deps.Version}); err != nil {
		h.deps.Logger.ErrorContext(c.Request.Context(), "render dashboard", "error", err)
	}
}

func (h *handlers) signInPage(c *gin.Context) {
	next, err := websession.CheckNext(c.Query("next"))
	if err != nil {
		next = websession.Home
	}
	if _, _, ok := h.session(c); ok {
		c.Redirect(http.StatusSeeOther, next)
		return
	}
	notice := ""
	if c.Query("signed_out") != "" {
		notice = "You are signed out."
	}
	h.renderSignIn(c, http.StatusOK, next, "", notice)
}

// renderSignIn issues a fresh form token with each form.
func (h *handlers) renderSignIn(c *gin.Context, status int, next, problem, notice string) {
	pageHeaders(c)
	token, err := websession.NewSecret()
	if err != nil {
		abortError(c, http.StatusInternalServerError, "internal", "could not prepare the sign-in form")
		return
	}
	http.SetCookie(c.Writer, &http.Cookie{Name: signInCookie, Value: token, Path: "/signin", MaxAge: 3600,
		HttpOnly: true, Secure: h.secureCookies(c), SameSite: http.SameSiteStrictMode})
	if problem != "" {
		c.Set(ctxErrorCode, "signin_failed")
	}
	c.Status(status)
	c.Header("Content-Type", htmlContentType)
	if err := h.site.RenderSignIn(c.Writer, dashboard.SignInPage{Next: next, CSRFToken: token, Error: problem, Notice: notice}); err != nil {
		h.deps.Logger.ErrorContext(c.Request.Context(), "render sign-in", "error", err)
	}
}

func (h *handlers) signInWithToken(c *gin.Context) {
	next, err := websession.CheckNext(c.PostForm("next"))
	if err != nil {
		next = websession.Home
	}
	ck, cerr := c.Request.Cookie(signInCookie)
	if cerr != nil || ck.Value == "" || c.PostForm("csrf_token") != ck.Value {
		h.renderSignIn(c, http.StatusForbidden, next, "The sign-in form expired or was not sent from this page; try again.", "")
		return
	}
	token := strings.TrimSpace(c.PostForm("token"))
	bad := "That API token is not valid: it may be mistyped or revoked. Tokens start with gsk_."
	if apitoken.Check(token) != nil {
		h.renderSignIn(c, http.StatusUnauthorized, next, bad, "")
		return
	}
	tenant, err := h.deps.Store.TenantByTokenHash(c.Request.Context(), apitoken.Hash(token))
	if errors.Is(err, store.ErrNotFound) {
		h.renderSignIn(c, http.StatusUnauthorized, next, bad, "")
		return
	}
	if err != nil {
		h.deps.Logger.ErrorContext(c.Request.Context(), "sign in with token", "error", err)
		h.renderSignIn(c, http.StatusServiceUnavailable, next, "Could not check the token right now; try again in a moment.", "")
		return
	}
	h.startSession(c, tenant, websession.ViaAPIToken+":"+apitoken.DisplayPrefix(token), next)
}

func (h *handlers) signInWithLink(c *gin.Context) {
	tenant, next, err := h.deps.Store.ConsumeLoginLink(c.Request.Context(), websession.Hash(c.Query("token")), time.Now())
	if errors.Is(err, store.ErrNotFound) {
		h.renderSignIn(c, http.StatusGone, websession.Home,
			"This login link is invalid, expired or already used (links work once, for 10 minutes). Ask for a new one: gitsec admin login-link --tenant NAME", "")
		return
	}
	if err != nil {
		h.deps.Logger.ErrorContext(c.Request.Context(), "consume login link", "error", err)
		h.renderSignIn(c, http.StatusServiceUnavailable, websession.Home, "Could not check the login link right now; reload this page to try again.", "")
		return
	}
	h.startSession(c, tenant, websession.ViaLoginLink, next)
}

func (h *handlers) startSession(c *gin.Context, tenant store.Tenant, via, next string) {
	secret, err := websession.NewSecret()
	if err == nil {
		err = h.deps.Store.CreateSession(c.Request.Context(), tenant.ID, websession.Hash(secret), via, time.Now().Add(websession.SessionTTL))
	}
	if err != nil {
		h.deps.Logger.ErrorContext(c.Request.Context(), "create session", "error", err)
		h.renderSignIn(c, http.StatusServiceUnavailable, next, "Could not sign you in right now; try again in a moment.", "")
		return
	}
	c.Set(ctxTenant, tenant)
	c.Set(ctxActor, "dashboard:"+via)
	h.audit(c, tenant.ID, "session.signed_in", "tenant", tenant.ID.String(), gin.H{"via": via})
	http.SetCookie(c.Writer, &http.Cookie{Name: websession.CookieName, Value: secret, Path: "/", MaxAge: int(websession.SessionTTL / time.Second),
		HttpOnly: true, Secure: h.secureCookies(c), SameSite: http.SameSiteLaxMode})
	http.SetCookie(c.Writer, &http.Cookie{Name: signInCookie, Value: "", Path: "/signin", MaxAge: -1, HttpOnly: true})
	pageHeaders(c)
	c.Redirect(http.StatusSeeOther, next)
}

func (h *handlers) signOut(c *gin.Context) {
	sess, secret, ok := h.session(c)
	if ok {
		if !websession.CheckCSRF(secret, c.PostForm("csrf_token")) {
			pageHeaders(c)
			abortError(c, http.StatusForbidden, "csrf_failed", "sign-out must come from the dashboard's own button (missing or wrong CSRF token)")
			return
		}
		if err := h.deps.Store.RevokeSession(c.Request.Context(), websession.Hash(secret)); err != nil {
			h.deps.Logger.ErrorContext(c.Request.Context(), "revoke session", "error", err)
			abortError(c, http.StatusServiceUnavailable, "unavailable", "could not sign out right now; try again")
			return
		}
		c.Set(ctxTenant, sess.Tenant)
		c.Set(ctxActor, "dashboard:"+sess.Via)
		h.audit(c, sess.Tenant.ID, "session.signed_out", "tenant", sess.Tenant.ID.String(), gin.H{"via": sess.Via})
	}
	http.SetCookie(c.Writer, &http.Cookie{Name: websession.CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: h.secureCookies(c), SameSite: http.SameSiteLaxMode})
	pageHeaders(c)
	c.Redirect(http.StatusSeeOther, "/signin?signed_out=1")
}

// secureCookies marks cookies Secure when browsers reach GitSec over HTTPS (directly or, per
// GITSEC_PUBLIC_URL, through a proxy that terminates TLS).
func (h *handlers) secureCookies(c *gin.Context) bool {
	return c.Request.TLS != nil || strings.HasPrefix(h.deps.PublicURL, "https://")
}

// authenticateSession is authenticate for a browser: the session cookie instead of a bearer
// token, and a CSRF token on every request that changes something.
func (h *handlers) authenticateSession(c *gin.Context) {
	sess, secret, ok := h.session(c)
	if !ok {
		abortError(c, http.StatusUnauthorized, "unauthorized", "your session has ended (signed out or expired); sign in again at /signin")
		return
	}
	switch c.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if !websession.CheckCSRF(secret, c.GetHeader("X-CSRF-Token")) {
			abortError(c, http.StatusForbidden, "csrf_failed", "this request changes something and must carry the page's CSRF token in X-CSRF-Token")
			return
		}
	}
	c.Set(ctxTenant, sess.Tenant)
	c.Set(ctxActor, "dashboard:"+sess.Via)
	c.Next()
}
