package api

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/websession"
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
var errNotBound = &apiError{status: http.StatusForbidden, code: "not_bound", message: "this connect link was opened in a different browser from the one that asked for it, so nothing was connected. " +
	"If you asked for it from a script or shell, finish there: POST this page's address as {\"callback_url\": \"...\"} to /api/v1/installations/bitbucket/complete with your tenant's API token; " +
	"otherwise ask for a new link from this browser. If someone sent you this link, stop here: finishing it would give their GitSec tenant read access to your Bitbucket repositories"}

// connectRequest is the optional body of POST .../bitbucket/connect.
type connectRequest struct {
	// ReturnTo is a dashboard path the callback sends the browser back to (with ?connected=ID)
	// instead of showing its own page; relative paths only.
	ReturnTo string `json:"return_to,omitempty"`
}

func (h *handlers) connectBitbucket(c *gin.Context) error {
	var req connectRequest
	if c.Request.ContentLength != 0 {
		if err := decodeJSON(c, &req); err != nil {
			return err
		}
	}
	returnTo := ""
	if req.ReturnTo != "" {
		var err error
		if returnTo, err = websession.CheckNext(req.ReturnTo); err != nil {
			return errInvalid("invalid_field", "field \"return_to\": "+err.Error())
		}
	}
	if h.deps.BitbucketOAuth == nil || h.deps.BitbucketOAuth.ClientID == "" {
		return errNotConfigured("no Bitbucket OAuth consumer is configured (GITSEC_BITBUCKET_CLIENT_ID)")
	}
	ctx := c.Request.Context()
	t := tenantOf(c)
	st, err := h.states.issue(ctx, t.ID)
	if err != nil {
		return failed("could not create the connect link", fmt.Errorf("issue oauth state: %w", err))
	}
	expires := time.Now().Add(h.deps.OAuthStateTTL)
	if err := h.deps.Store.CreateOAuthStateReturning(ctx, t.ID, st.Nonce, providerBitbucket, expires, returnTo); err != nil {
		return failed("could not create the connect link", err)
	}
	h.setBindingCookie(c, st)
	c.JSON(http.StatusOK, ConnectLink{AuthorizeURL: h.deps.BitbucketOAuth.AuthCodeURL(st.State), ExpiresAt: expires.UTC()})
	return nil
}

// setBindingCookie hands the binding to the client that asked. It is scoped to the callback's
// path, HttpOnly, and SameSite=Lax: the callback is a top-level GET navigation from Bitbucket,
// which Lax lets through, while other sites' subrequests never carry it.
func (h *handlers) setBindingCookie(c *gin.Context, st issuedState) {
	h.setBindingCookieFor(c, st, h.deps.BitbucketOAuth)
}

// errNotConfigured is a 503 that no retry fixes until the operator sets the consumer.
func errNotConfigured(message string) error {
	return &apiError{status: http.StatusServiceUnavailable, code: "not_configured", message: message}
}

// callbackError answers the OAuth callback: JSON for API clients, a short page for browsers.
func callbackError(c *gin.Context, status int, code, message string) {
	if wantsHTML(c) {
		c.Set(ctxErrorCode, code)
		c.Data(status, htmlContentType, callbackPage("Connecting Bitbucket failed", message, c.GetString(ctxReturnTo)))
		c.Abort()
		return
	}
	abortError(c, status, code, message)
}

// bitbucketCallback is where Bitbucket sends the browser back. The binding is checked before
// the state is consumed, so a link opened in the wrong browser can still be finished by the
// client that asked.
func (h *handlers) bitbucketCallback(c *gin.Context) error {
	st, err := h.verifyState(c, c.Query("state"))
	if err != nil {
		return err
	}
	c.Set(ctxReturnTo, h.deps.Store.OAuthStateReturnTo(c.Request.Context(), st.Nonce))
	cookie, err := c.Request.Cookie(bindingCookieName(st.Nonce))
	if err != nil || !st.boundTo(cookie.Value) {
		h.deps.Logger.WarnContext(c.Request.Context(), "oauth callback without the binding of the client that asked",
			"tenant_id", st.TenantID, "cookie_present", err == nil, "request_id", c.GetString(ctxRequestID))
		return errNotBound
	}
	// The cookie is left to expire with the link rather than cleared: once the state is used it
	// binds nothing, and keeping it lets a replay in the same browser be told "already used".
	return h.finishConnect(c, st, c.Request.URL.Query())
}

type completeConnectRequest struct {
	CallbackURL string `json:"callback_url"`
}

// completeBitbucketConnect finishes a connect whose callback landed in a browser without the
// binding: the tenant proves itself with its API token instead of the cookie.
func (h *handlers) completeBitbucketConnect(c *gin.Context) error {
	var req completeConnectRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	u, err := url.Parse(req.CallbackURL)
	if err != nil || u.Query().Get("state") == "" {
		return errInvalid("invalid_field", "field \"callback_url\" must be the address Bitbucket sent the browser to (.../oauth/bitbucket/callback?code=...&state=...)")
	}
	q := u.Query()
	st, err := h.verifyState(c, q.Get("state"))
	if err != nil {
		return err
	}
	// Another tenant's link looks like an invalid one: its existence is not revealed.
	if st.TenantID != tenantOf(c).ID {
		return errInvalid("invalid_state", errBadState.Error())
	}
	return h.finishConnect(c, st, q)
}

func (h *handlers) verifyState(c *gin.Context, state string) (verifiedState, error) {
	st, err := h.states.verify(c.Request.Context(), state)
	if errors.Is(err, errBadState) {
		return verifiedState{}, errInvalid("invalid_state", errBadState.Error())
	}
	if err != nil {
		return verifiedState{}, failed("could not check the OAuth state", err)
	}
	return st, nil
}

// finishConnect consumes the state and, if Bitbucket granted access, exchanges the code, stores
// the sealed credentials and starts discovery.
func (h *handlers) finishConnect(c *gin.Context, st verifiedState, q url.Values) error {
	ctx := c.Request.Context()
	badState := errInvalid("invalid_state", errBadState.Error())
	tenantID := st.TenantID
	consumedBy, err := h.deps.Store.ConsumeOAuthState(ctx, st.Nonce, providerBitbucket, time.Now())
	if errors.Is(err, store.ErrNotFound) {
		return badState
	}
	if err != nil {
		return failed("could not check the OAuth state", err)
	}
	if consumedBy != tenantID {
		return badState
	}
	if e := q.Get("error"); e != "" {
		msg := "Bitbucket authorization was not granted (" + e + ")"
		if d := q.Get("error_description"); d != "" {
			msg += ": " + d
		}
		return errInvalid("access_denied", msg+". Nothing was connected.")
	}
	code := q.Get("code")
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
		if back := c.GetString(ctxReturnTo); back != "" {
			sep := "?"
			if strings.Contains(back, "?") {
				sep = "&"
			}
			c.Redirect(http.StatusSeeOther, back+sep+"connected="+instID.String())
			return nil
		}
		c.Data(created, htmlContentType, callbackPage("Bitbucket connected",
			"Installation "+instID.String()+" is discovering workspaces and repositories.", ""))
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

// ctxReturnTo is the dashboard path of a connect started there ("" otherwise).
const ctxReturnTo = "return_to"

// callbackPage is the minimal page a browser sees at the end of the connect flow; back, when
// set, links to the dashboard page the connect started from.
func callbackPage(heading, message, back string) []byte {
	page := "<!doctype html><title>GitSec</title><h1>" + html.EscapeString(heading) + "</h1><p>" +
		html.EscapeString(message) + "</p>"
	if back != "" {
		page += `<p><a href="` + html.EscapeString(back) + `">Back to GitSec</a></p>`
	}
	return []byte(page)
}
