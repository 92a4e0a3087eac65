package api

import (
	"context"
	"html"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/store"
)

// The OAuth connect flow: POST .../bitbucket/connect issues a signed, single-use state and the
// authorize URL; Bitbucket redirects the browser to the callback, which exchanges the code,
// stores the sealed credentials and starts discovery.

const providerBitbucket = "bitbucket"

func (h *handlers) connectBitbucket(c *gin.Context) {
	if h.deps.BitbucketOAuth == nil || h.deps.BitbucketOAuth.ClientID == "" {
		abortError(c, http.StatusServiceUnavailable, "not_configured", "no Bitbucket OAuth consumer is configured (GITSEC_BITBUCKET_CLIENT_ID)")
		return
	}
	ctx := c.Request.Context()
	t := tenantOf(c)
	state, nonce, err := h.states.issue(ctx, t.ID)
	if err != nil {
		h.deps.Logger.Error("issue oauth state", "error", err)
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not create the connect link")
		return
	}
	expires := time.Now().Add(h.deps.OAuthStateTTL)
	if err := h.deps.Store.CreateOAuthState(ctx, t.ID, nonce, providerBitbucket, expires); err != nil {
		abortError(c, http.StatusServiceUnavailable, "unavailable", "could not create the connect link")
		return
	}
	c.JSON(http.StatusOK, gin.H{
		"authorize_url": h.deps.BitbucketOAuth.AuthCodeURL(state),
		"expires_at":    expires.UTC(),
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

func (h *handlers) bitbucketCallback(c *gin.Context) {
	ctx := c.Request.Context()
	tenantID, nonce, err := h.states.verify(ctx, c.Query("state"))
	if err != nil {
		callbackError(c, http.StatusBadRequest, "invalid_state", errBadState.Error())
		return
	}
	consumedBy, err := h.deps.Store.ConsumeOAuthState(ctx, nonce, providerBitbucket, time.Now())
	if err != nil || consumedBy != tenantID {
		callbackError(c, http.StatusBadRequest, "invalid_state", errBadState.Error())
		return
	}
	if e := c.Query("error"); e != "" {
		msg := "Bitbucket authorization was not granted (" + e + ")"
		if d := c.Query("error_description"); d != "" {
			msg += ": " + d
		}
		callbackError(c, http.StatusBadRequest, "access_denied", msg+". Nothing was connected.")
		return
	}
	code := c.Query("code")
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
