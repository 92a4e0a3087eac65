package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/store"
)

// The Restore App is a second Bitbucket consumer with write access, installed per installation
// only to restore. Its connect flow mirrors the backup app's (a signed single-use state bound to
// the asking client by a cookie), but the state belongs to one installation and the grant is
// stored apart from the installation's read-only credentials.

const providerBitbucketRestore = "bitbucket-restore"

// RestoreAppGrant is whether an installation has the Restore App, and since when.
type RestoreAppGrant struct {
	Granted   bool       `json:"granted"`
	Account   string     `json:"account,omitempty"`
	GrantedAt *time.Time `json:"granted_at,omitempty"`
	// ConnectURL is the route that installs (or re-installs) it.
	ConnectURL string `json:"connect_url"`
}

func restoreConnectRoute(instID string) string {
	return "/api/v1/installations/" + instID + "/restore-app/connect"
}

func (h *handlers) restoreGrantView(ctx context.Context, inst store.Installation) (RestoreAppGrant, error) {
	v := RestoreAppGrant{ConnectURL: restoreConnectRoute(inst.ID.String())}
	g, err := h.deps.Store.AppGrant(ctx, inst.TenantID, inst.ID, domain.AppRestore)
	if errors.Is(err, store.ErrNoGrant) {
		return v, nil
	}
	if err != nil {
		return v, err
	}
	at := g.GrantedAt.UTC()
	v.Granted, v.Account, v.GrantedAt = true, g.AccountName, &at
	return v, nil
}

func (h *handlers) getRestoreApp(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	v, err := h.restoreGrantView(c.Request.Context(), inst)
	if err != nil {
		return failed("could not read the Restore App grant", err)
	}
	c.JSON(http.StatusOK, v)
	return nil
}

func (h *handlers) deleteRestoreApp(c *gin.Context) error {
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	err = h.deps.Store.DeleteAppGrant(c.Request.Context(), inst.TenantID, inst.ID, domain.AppRestore)
	if errors.Is(err, store.ErrNoGrant) {
		return &apiError{status: http.StatusNotFound, code: "not_found", message: "installation " + inst.ID.String() + " has no Restore App grant"}
	}
	if err != nil {
		return failed("could not remove the Restore App grant", err)
	}
	h.audit(c, inst.TenantID, "restore_app.removed", "installation", inst.ID.String(), gin.H{})
	c.JSON(http.StatusOK, RestoreAppGrant{ConnectURL: restoreConnectRoute(inst.ID.String())})
	return nil
}

func (h *handlers) connectRestoreApp(c *gin.Context) error {
	cfg := h.deps.RestoreOAuth
	if cfg == nil || cfg.ClientID == "" {
		return errNotConfigured("no Restore App OAuth consumer is configured (GITSEC_BITBUCKET_RESTORE_CLIENT_ID)")
	}
	inst, err := h.installationParam(c)
	if err != nil {
		return err
	}
	if store.BackupsStopped(inst.Status) {
		return errConflict("installation_removed", "installation "+inst.ID.String()+" is "+inst.Status+": connect the account again before installing the Restore App")
	}
	ctx := c.Request.Context()
	st, err := h.states.issue(ctx, inst.TenantID)
	if err != nil {
		return failed("could not create the connect link", err)
	}
	expires := time.Now().Add(h.deps.OAuthStateTTL)
	if err := h.deps.Store.CreateInstallationOAuthState(ctx, inst.TenantID, inst.ID, st.Nonce, providerBitbucketRestore, expires); err != nil {
		return failed("could not create the connect link", err)
	}
	h.setBindingCookieFor(c, st, cfg)
	c.JSON(http.StatusOK, ConnectLink{AuthorizeURL: cfg.AuthCodeURL(st.State), ExpiresAt: expires.UTC()})
	return nil
}

// restoreCallback is where Bitbucket sends the browser back after the Restore App's consent.
func (h *handlers) restoreCallback(c *gin.Context) error {
	st, err := h.verifyState(c, c.Query("state"))
	if err != nil {
		return err
	}
	cookie, err := c.Request.Cookie(bindingCookieName(st.Nonce))
	if err != nil || !st.boundTo(cookie.Value) {
		return errNotBound
	}
	ctx := c.Request.Context()
	tenantID, instID, err := h.deps.Store.ConsumeInstallationOAuthState(ctx, st.Nonce, providerBitbucketRestore, time.Now())
	if errors.Is(err, store.ErrNotFound) || (err == nil && tenantID != st.TenantID) {
		return errInvalid("invalid_state", "the Restore App connect link is invalid, expired or already used; ask for a new one with POST "+restoreConnectRoute("{id}"))
	}
	if err != nil {
		return failed("could not check the OAuth state", err)
	}
	q := c.Request.URL.Query()
	if e := q.Get("error"); e != "" {
		return errInvalid("access_denied", "Bitbucket authorization of the Restore App was not granted ("+e+"). Nothing was installed.")
	}
	code := q.Get("code")
	if code == "" {
		return errInvalid("missing_code", "the callback carries no authorization code")
	}
	exCtx := ctx
	if h.deps.OAuthHTTPClient != nil {
		exCtx = context.WithValue(ctx, oauth2.HTTPClient, h.deps.OAuthHTTPClient)
	}
	tok, err := bitbucket.ExchangeCode(exCtx, h.deps.RestoreOAuth, code)
	if err != nil {
		return &apiError{status: http.StatusBadRequest, code: "oauth_exchange_failed",
			message: "Bitbucket did not accept the authorization code (expired or already used); connect the Restore App again", cause: err}
	}
	inst, err := h.deps.Store.GetInstallation(ctx, tenantID, instID)
	if err != nil {
		return failed("could not read the installation", err)
	}
	acct, err := h.checkRestoreAccount(exCtx, tok, inst)
	if err != nil {
		return err
	}
	sealed, err := providerclient.SealToken(ctx, h.deps.Box, tok)
	if err != nil {
		return failed("could not store the Restore App grant", err)
	}
	g, err := h.deps.Store.SaveAppGrant(ctx, tenantID, instID, domain.AppRestore, acct, sealed)
	if errors.Is(err, store.ErrInstallationRemoved) {
		return errConflict("installation_removed", "installation "+instID.String()+" was uninstalled; nothing was stored")
	}
	if err != nil {
		return failed("could not store the Restore App grant", err)
	}
	h.audit(c, tenantID, "restore_app.connected", "installation", instID.String(), gin.H{"account": acct.Name})
	if wantsHTML(c) {
		c.Data(http.StatusOK, htmlContentType, callbackPage("Restore App installed",
			"Installation "+instID.String()+" can now restore backups into Bitbucket as "+acct.Name+".", ""))
		return nil
	}
	at := g.GrantedAt.UTC()
	c.JSON(http.StatusOK, RestoreAppGrant{Granted: true, Account: acct.Name, GrantedAt: &at, ConnectURL: restoreConnectRoute(instID.String())})
	return nil
}

// checkRestoreAccount accepts a grant of the installation's own account, or of an account that
// administers one of the installation's workspaces: the Restore App must not let one person's
// backups be written with a stranger's access, or a stranger's into them.
func (h *handlers) checkRestoreAccount(ctx context.Context, tok *oauth2.Token, inst store.Installation) (store.ProviderAccount, error) {
	acct, err := h.connectedAccount(ctx, tok)
	if err != nil {
		return acct, failed("could not ask Bitbucket which account granted the Restore App; nothing was stored, connect it again", err)
	}
	if acct.UUID == inst.AccountUUID {
		return acct, nil
	}
	c := bitbucket.New(bitbucket.Options{APIBaseURL: h.deps.BitbucketAPIURL, TokenSource: oauth2.StaticTokenSource(tok),
		HTTPClient: h.deps.OAuthHTTPClient, Logger: h.deps.Logger, UserAgent: "GitSec-Restore"})
	access, err := c.ListUserWorkspaces(ctx)
	if err != nil {
		return acct, failed("could not list the workspaces of the Restore App's account; nothing was stored", err)
	}
	wss, err := h.deps.Store.ListWorkspaces(ctx, inst.TenantID, inst.ID)
	if err != nil {
		return acct, failed("could not read the installation's workspaces", err)
	}
	mine := map[string]bool{}
	for _, w := range wss {
		mine[w.Slug] = true
	}
	for _, a := range access {
		if a.Administrator && mine[a.Workspace.Slug] {
			return acct, nil
		}
	}
	return acct, &apiError{status: http.StatusForbidden, code: "restore_account_mismatch",
		message: "the Restore App was granted by Bitbucket account " + acct.Name + ", which is neither the installation's account (" + inst.AccountName +
			") nor an administrator of one of its workspaces; nothing was stored. Sign in to Bitbucket as " + inst.AccountName + " and connect again"}
}

// setBindingCookieFor is setBindingCookie for a consumer's own callback path.
func (h *handlers) setBindingCookieFor(c *gin.Context, st issuedState, cfg *oauth2.Config) {
	path, secure := "/", false
	if cfg != nil {
		if u, err := url.Parse(cfg.RedirectURL); err == nil && u.Path != "" {
			path, secure = u.Path, u.Scheme == "https"
		}
	}
	http.SetCookie(c.Writer, &http.Cookie{
		Name: bindingCookieName(st.Nonce), Value: st.Binding, Path: path, MaxAge: int(h.deps.OAuthStateTTL / time.Second),
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode,
	})
}
