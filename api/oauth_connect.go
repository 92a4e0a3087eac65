package api

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/store"
)

// The OAuth connect flow: POST .../bitbucket/connect issues a signed, single-use state and the
// authorize URL; Bitbucket redirects the browser to the callback, which exchanges the code,
// stores the sealed credentials and starts discovery.

const providerBitbucket = "bitbucket"

func (h *handlers) connectBitbucket(c *gin.Context) error {
	if h.deps.BitbucketOAuth == nil || h.deps.BitbucketOAuth.ClientID == "" {
		return errNotConfigured("no Bitbucket OAuth consumer is configured (GITSEC_BITBUCKET_CLIENT_ID)")
	}
	ctx := c.Request.Context()
	t := tenantOf(c)
	state, nonce, err := h.states.issue(ctx, t.ID)
	if err != nil {
		return failed("could not create the connect link", fmt.Errorf("issue oauth state: %w", err))
	}
	expires := time.Now().Add(h.deps.OAuthStateTTL)
	if err := h.deps.Store.CreateOAuthState(ctx, t.ID, nonce, providerBitbucket, expires); err != nil {
		return failed("could not create the connect link", err)
	}
	c.JSON(http.StatusOK, ConnectLink{AuthorizeURL: h.deps.BitbucketOAuth.AuthCodeURL(state), ExpiresAt: expires.UTC()})
	return nil
}

// errNotConfigured is a 503 that no retry fixes until the operator sets the consumer.
func errNotConfigured(message string) error {
	return &apiError{status: http.StatusServiceUnavailable, code: "not_configured", message: message}
}

// callbackError answers the OAuth callback: JSON for API clients, a short page for browsers.
func callbackError(c *gin.Context, status int, code, message string) {
	if wantsHTML(c) {
		c.Set(ctxErrorCode, code)
		c.Data(status, htmlContentType, callbackPage("Connecting Bitbucket failed", message))
		c.Abort()
		return
	}
	abortError(c, status, code, message)
}

func (h *handlers) bitbucketCallback(c *gin.Context) error {
	ctx := c.Request.Context()
	badState := errInvalid("invalid_state", errBadState.Error())
	tenantID, nonce, err := h.states.verify(ctx, c.Query("state"))
	if errors.Is(err, errBadState) {
		return badState
	}
	if err != nil {
		return failed("could not check the OAuth state", err)
	}
	consumedBy, err := h.deps.Store.ConsumeOAuthState(ctx, nonce, providerBitbucket, time.Now())
	if errors.Is(err, store.ErrNotFound) {
		return badState
	}
	if err != nil {
		return failed("could not check the OAuth state", err)
	}
	if consumedBy != tenantID {
		return badState
	}
	if e := c.Query("error"); e != "" {
		msg := "Bitbucket authorization was not granted (" + e + ")"
		if d := c.Query("error_description"); d != "" {
			msg += ": " + d
		}
		return errInvalid("access_denied", msg+". Nothing was connected.")
	}
	code := c.Query("code")
	if code == "" {
		return errInvalid("missing_code", "the callback carries no authorization code")
	}
	if h.deps.BitbucketOAuth == nil {
		return errNotConfigured("no Bitbucket OAuth consumer is configured")
	}
	exCtx := ctx
	if h.deps.OAuthHTTPClient != nil {
		exCtx = context.WithValue(ctx, oauth2.HTTPClient, h.deps.OAuthHTTPClient)
	}
	tok, err := bitbucket.ExchangeCode(exCtx, h.deps.BitbucketOAuth, code)
	if err != nil {
		return &apiError{status: http.StatusBadRequest, code: "oauth_exchange_failed",
			message: "Bitbucket did not accept the authorization code (expired or already used); connect again", cause: err}
	}
	sealed, err := providerclient.SealToken(ctx, h.deps.Box, tok)
	if err != nil {
		return failed("could not store the credentials", err)
	}
	acct, err := h.connectedAccount(exCtx, tok)
	if err != nil {
		return failed("could not ask Bitbucket which account was connected; nothing was stored, connect again", err)
	}
	instID, reconnected, err := h.deps.Store.ConnectInstallation(ctx, tenantID, acct, sealed)
	var dup *store.AlreadyConnectedError
	if errors.As(err, &dup) {
		return errConflict("already_connected", alreadyConnectedMessage(dup))
	}
	if err != nil {
		return failed("could not record the installation", err)
	}
	action, reason := "installation.connected", "connect"
	if reconnected {
		action, reason = "installation.reconnected", "reconnect"
	}
	h.audit(c, tenantID, action, "installation", instID.String(), gin.H{"provider": providerBitbucket, "account": acct.Name})
	wfID, err := h.starts.StartOnboarding(ctx, tenantID, instID, reason)
	if err != nil {
		retry := "retry with POST /api/v1/installations/" + instID.String() + "/sync"
		if serr := h.deps.Store.SetInstallationStatus(ctx, tenantID, instID, domain.InstallationFailed, "could not start discovery; "+retry); serr != nil {
			err = errors.Join(err, fmt.Errorf("mark installation failed: %w", serr))
		}
		return failed("the account is connected but discovery could not start; "+retry, err)
	}
	// A reconnect repairs an existing installation (200); a first connect creates one (201).
	created := http.StatusCreated
	if reconnected {
		created = http.StatusOK
	}
	if wantsHTML(c) {
		c.Data(created, htmlContentType, callbackPage("Bitbucket connected",
			"Installation "+instID.String()+" is discovering workspaces and repositories."))
		return nil
	}
	c.JSON(created, Connected{InstallationID: instID, Status: domain.InstallationPending, WorkflowID: wfID, Reconnected: reconnected})
	return nil
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
