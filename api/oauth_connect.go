package api

import (
	"context"
	"errors"
	"html"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/store"
)

// The OAuth connect flow: POST .../bitbucket/connect issues a signed, single-use state and the
// authorize URL, and hands the caller a binding cookie; Bitbucket redirects the browser to the
// callback, which checks the cookie, exchanges the code, stores the sealed credentials and
// starts discovery. Without the binding, whoever opened a forwarded link would connect their
// own Bitbucket account to the issuing tenant; a client that asked without a cookie store (a
// script that printed the link for a browser) finishes through POST .../bitbucket/complete with
// the tenant's API token instead.

const providerBitbucket = "bitbucket"

// bindingCookiePrefix names the cookie that binds one connect link to the client that asked for
// it; each link has its own (the name carries part of the nonce), so parallel connects in one
// browser do not overwrite each other.
const bindingCookiePrefix = "gitsec_connect_"

func bindingCookieName(nonce string) string {
	return bindingCookiePrefix + nonce[:16]
}

// errNotBound explains a callback that arrived without the binding. It names the escape for the
// legitimate case and warns the person who was sent someone else's link.
var errNotBound = errors.New("this connect link was opened in a different browser from the one that asked for it, so nothing was connected. " +
	"If you asked for it from a script or shell, finish there: POST this page's address as {\"callback_url\": \"...\"} to /api/v1/installations/bitbucket/complete with your tenant's API token; " +
	"otherwise ask for a new link from this browser. If someone sent you this link, stop here: finishing it would give their GitSec tenant read access to your Bitbucket repositories")

func (h *handlers) connectBitbucket(c *gin.Context) {
	if h.deps.BitbucketOAuth == nil || h.deps.BitbucketOAuth.ClientID == "" {
		abortError(c, http.StatusServiceUnavailable, "not_configured", "no Bitbucket OAuth consumer is configured (GITSEC_BITBUCKET_CLIENT_ID)")
		return
	}
	ctx := c.Request.Context()
	t := tenantOf(c)
	st, err := h.states.issue(ctx, t.ID)
	if err != nil {
		h.deps.Logger.Error("issue oauth state", "error", err)
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not create the connect link")
		return
	}
	expires := time.Now().Add(h.deps.OAuthStateTTL)
	if err := h.deps.Store.CreateOAuthState(ctx, t.ID, st.Nonce, providerBitbucket, expires); err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not create the connect link")
		return
	}
	h.setBindingCookie(c, st)
	c.JSON(http.StatusOK, gin.H{
		"authorize_url": h.deps.BitbucketOAuth.AuthCodeURL(st.State),
		"expires_at":    expires.UTC(),
	})
}

// setBindingCookie hands the binding to the client that asked. It is scoped to the callback's
// path, HttpOnly, and SameSite=Lax: the callback is a top-level GET navigation from Bitbucket,
// which Lax lets through, while other sites' subrequests never carry it.
func (h *handlers) setBindingCookie(c *gin.Context, st issuedState) {
	path, secure := "/", false
	if cfg := h.deps.BitbucketOAuth; cfg != nil {
		if u, err := url.Parse(cfg.RedirectURL); err == nil && u.Path != "" {
			path, secure = u.Path, u.Scheme == "https"
		}
	}
	http.SetCookie(c.Writer, &http.Cookie{
		Name: bindingCookieName(st.Nonce), Value: st.Binding, Path: path, MaxAge: int(h.deps.OAuthStateTTL / time.Second),
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode,
	})
}

// callbackError answers the OAuth callback: JSON for API clients, a short page for browsers.
func callbackError(c *gin.Context, status int, code, message string) {
	if wantsHTML(c) {
		c.Data(status, htmlContentType, callbackPage("Connecting Bitbucket failed", message))
		c.Abort()
		return
	}
	abortError(c, status, code, message)
}

// bitbucketCallback is where Bitbucket sends the browser back. The binding is checked before
// the state is consumed, so a link opened in the wrong browser can still be finished by the
// client that asked.
func (h *handlers) bitbucketCallback(c *gin.Context) {
	st, err := h.states.verify(c.Request.Context(), c.Query("state"))
	if err != nil {
		callbackError(c, http.StatusBadRequest, "invalid_state", errBadState.Error())
		return
	}
	cookie, err := c.Request.Cookie(bindingCookieName(st.Nonce))
	if err != nil || !st.boundTo(cookie.Value) {
		h.deps.Logger.Warn("oauth callback without the binding of the client that asked", "tenant_id", st.TenantID, "cookie_present", err == nil)
		callbackError(c, http.StatusForbidden, "not_bound", errNotBound.Error())
		return
	}
	// The cookie is left to expire with the link rather than cleared: once the state is used it
	// binds nothing, and keeping it lets a replay in the same browser be told "already used".
	h.finishConnect(c, st, c.Request.URL.Query())
}

type completeConnectRequest struct {
	CallbackURL string `json:"callback_url"`
}

// completeBitbucketConnect finishes a connect whose callback landed in a browser without the
// binding: the tenant proves itself with its API token instead of the cookie.
func (h *handlers) completeBitbucketConnect(c *gin.Context) {
	var req completeConnectRequest
	if !decodeJSON(c, &req) {
		return
	}
	u, err := url.Parse(req.CallbackURL)
	if err != nil || u.Query().Get("state") == "" {
		abortError(c, http.StatusBadRequest, "invalid_field", "field \"callback_url\" must be the address Bitbucket sent the browser to (.../oauth/bitbucket/callback?code=...&state=...)")
		return
	}
	q := u.Query()
	st, err := h.states.verify(c.Request.Context(), q.Get("state"))
	// Another tenant's link looks like an invalid one: its existence is not revealed.
	if err != nil || st.TenantID != tenantOf(c).ID {
		abortError(c, http.StatusBadRequest, "invalid_state", errBadState.Error())
		return
	}
	h.finishConnect(c, st, q)
}

// finishConnect consumes the state and, if Bitbucket granted access, exchanges the code, stores
// the sealed credentials and starts discovery.
func (h *handlers) finishConnect(c *gin.Context, st verifiedState, q url.Values) {
	ctx := c.Request.Context()
	tenantID := st.TenantID
	consumedBy, err := h.deps.Store.ConsumeOAuthState(ctx, st.Nonce, providerBitbucket, time.Now())
	if err != nil || consumedBy != tenantID {
		callbackError(c, http.StatusBadRequest, "invalid_state", errBadState.Error())
		return
	}
	if e := q.Get("error"); e != "" {
		msg := "Bitbucket authorization was not granted (" + e + ")"
		if d := q.Get("error_description"); d != "" {
			msg += ": " + d
		}
		callbackError(c, http.StatusBadRequest, "access_denied", msg+". Nothing was connected.")
		return
	}
	code := q.Get("code")
	if code == "" {
		callbackError(c, http.StatusBadRequest, "missing_code", "the callback carries no authorization code")
		return
	}
	if h.deps.BitbucketOAuth == nil {
		callbackError(c, http.StatusServiceUnavailable, "not_configured", "no Bitbucket OAuth consumer is configured")
		return
	}
	exCtx := ctx
	if h.deps.OAuthHTTPClient != nil {
		exCtx = context.WithValue(ctx, oauth2.HTTPClient, h.deps.OAuthHTTPClient)
	}
	tok, err := bitbucket.ExchangeCode(exCtx, h.deps.BitbucketOAuth, code)
	if err != nil {
		h.deps.Logger.Warn("oauth code exchange failed", "error", err)
		callbackError(c, http.StatusBadRequest, "oauth_exchange_failed", "Bitbucket did not accept the authorization code (expired or already used); connect again")
		return
	}
	sealed, err := providerclient.SealToken(ctx, h.deps.Box, tok)
	if err != nil {
		callbackError(c, http.StatusServiceUnavailable, "unavailable", "could not store the credentials")
		return
	}
	instID, err := h.deps.Store.CreateInstallationWithCredentials(ctx, tenantID, providerBitbucket, sealed)
	if err != nil {
		callbackError(c, http.StatusServiceUnavailable, "unavailable", "could not record the installation")
		return
	}
	h.audit(c, tenantID, "installation.connected", "installation", instID.String(), gin.H{"provider": providerBitbucket})
	wfID, err := h.starts.StartOnboarding(ctx, tenantID, instID, "connect")
	if err != nil {
		h.deps.Logger.Error("start onboarding", "installation", instID, "error", err)
		_ = h.deps.Store.SetInstallationStatus(ctx, tenantID, instID, store.InstallationFailed, "could not start discovery; retry with POST /api/v1/installations/"+instID.String()+"/sync")
		callbackError(c, http.StatusServiceUnavailable, "unavailable", "the account is connected but discovery could not start; retry with POST /api/v1/installations/"+instID.String()+"/sync")
		return
	}
	if wantsHTML(c) {
		c.Data(http.StatusCreated, htmlContentType, callbackPage("Bitbucket connected",
			"Installation "+instID.String()+" is discovering workspaces and repositories."))
		return
	}
	c.JSON(http.StatusCreated, gin.H{"installation_id": instID, "status": store.InstallationPending, "workflow_id": wfID})
}

const htmlContentType = "text/html; charset=utf-8"

// wantsHTML tells a browser landing on the callback from an API client calling it.
func wantsHTML(c *gin.Context) bool {
	return strings.Contains(c.GetHeader("Accept"), "text/html")
}

// callbackPage is the minimal page a browser sees at the end of the connect flow.
func callbackPage(heading, message string) []byte {
	return []byte("<!doctype html><title>GitSec</title><h1>" + html.EscapeString(heading) + "</h1><p>" +
		html.EscapeString(message) + "</p>")
}
