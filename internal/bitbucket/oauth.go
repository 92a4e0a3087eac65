package bitbucket

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// AccessTokenLifetime is how long Bitbucket access tokens live (expires_in 7200). Older
// documentation says one hour; Atlassian confirmed two.
const AccessTokenLifetime = 2 * time.Hour

// DefaultRefreshMargin is how long before expiry a token is refreshed. Requests are short, but
// a git clone authenticates once at its start, so a token must not be about to expire then.
const DefaultRefreshMargin = 5 * time.Minute

// OAuthConfig describes a Bitbucket OAuth 2.0 consumer. oauthBaseURL is e.g.
// https://bitbucket.org/site/oauth2. Scopes stay empty because Bitbucket takes them from the
// consumer's permission checkboxes, not from the authorization request. Bitbucket expects the
// consumer key and secret as HTTP Basic credentials on the token endpoint.
func OAuthConfig(consumerKey, consumerSecret, oauthBaseURL, redirectURL string) *oauth2.Config {
	base := strings.TrimRight(oauthBaseURL, "/")
	return &oauth2.Config{
		ClientID:     consumerKey,
		ClientSecret: consumerSecret,
		RedirectURL:  redirectURL,
		Endpoint: oauth2.Endpoint{
			AuthURL:   base + "/authorize",
			TokenURL:  base + "/access_token",
			AuthStyle: oauth2.AuthStyleInHeader,
		},
	}
}

// ExchangeCode trades the authorization code from the consumer's callback for a token.
// A rejected code yields an error matching ErrCredentialsRevoked.
func ExchangeCode(ctx context.Context, cfg *oauth2.Config, code string) (*oauth2.Token, error) {
	tok, err := cfg.Exchange(ctx, code)
	if err != nil {
		return nil, fmt.Errorf("exchange authorization code: %w", classifyTokenError(ctx, cfg, err))
	}
	if tok.AccessToken == "" {
		return nil, errors.New("exchange authorization code: token endpoint returned no access_token")
	}
	return tok, nil
}

// TokenRefresher is implemented by token sources that can replace an access token the API
// just rejected. The client uses it to react to a 401 with exactly one forced refresh.
type TokenRefresher interface {
	// TokenContext is Token bound to ctx, so a refresh can be cancelled with the request.
	TokenContext(ctx context.Context) (*oauth2.Token, error)
	// ForceRefresh refreshes unless the current access token already differs from rejected
	// (another goroutine refreshed in the meantime).
	ForceRefresh(ctx context.Context, rejected string) (*oauth2.Token, error)
}

// PersistingTokenSource refreshes the access token before it expires and hands every newly
// issued token to persist. Bitbucket may rotate the refresh token on each refresh; the one
// returned last is the only one guaranteed to work, so losing it strands the installation.
// That is why a failed persist fails the call (and is retried on the next one) rather than
// carrying on with a token that exists only in memory.
//
// Refreshes are serialised: concurrent refreshes with one rotating refresh token would
// invalidate each other. Callers sharing one credential must share one source per process;
// across processes the credential store has to serialise refreshes.
type PersistingTokenSource struct {
	cfg        *oauth2.Config
	httpClient *http.Client // carried from the constructor's context for the token endpoint
	persist    func(context.Context, *oauth2.Token) error
	margin     time.Duration
	now        func() time.Time
	baseCtx    context.Context

	// sem is a one-slot semaphore instead of a mutex so waiters can give up when their ctx ends.
	sem         chan struct{}
	tok         *oauth2.Token
	unpersisted bool
}

var (
	_ oauth2.TokenSource = (*PersistingTokenSource)(nil)
	_ TokenRefresher     = (*PersistingTokenSource)(nil)
)

// NewPersistingTokenSource wraps tok. ctx is used for refreshes made through Token() and may
// carry an *http.Client under oauth2.HTTPClient for the token endpoint. persist may be nil.
func NewPersistingTokenSource(ctx context.Context, cfg *oauth2.Config, tok *oauth2.Token, persist func(context.Context, *oauth2.Token) error) *PersistingTokenSource {
	var current *oauth2.Token
	if tok != nil {
		copied := *tok
		current = &copied
	} else {
		current = &oauth2.Token{}
	}
	client, _ := ctx.Value(oauth2.HTTPClient).(*http.Client)
	return &PersistingTokenSource{
		cfg:        cfg,
		httpClient: client,
		persist:    persist,
		margin:     DefaultRefreshMargin,
		now:        time.Now,
		baseCtx:    context.WithoutCancel(ctx),
		sem:        make(chan struct{}, 1),
		tok:        current,
	}
}

// SetRefreshMargin changes how long before expiry the token is refreshed.
func (s *PersistingTokenSource) SetRefreshMargin(margin time.Duration) {
	s.sem <- struct{}{}
	s.margin = margin
	<-s.sem
}

// Token implements oauth2.TokenSource.
func (s *PersistingTokenSource) Token() (*oauth2.Token, error) {
	return s.TokenContext(s.baseCtx)
}

// TokenContext returns a valid token, refreshing it first when it expires within the margin.
func (s *PersistingTokenSource) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.unlock()
	if s.unpersisted {
		if err := s.persistLocked(ctx); err != nil {
			return nil, err
		}
	}
	if s.validLocked() {
		return s.copyLocked(), nil
	}
	return s.refreshLocked(ctx)
}

// ForceRefresh implements TokenRefresher.
func (s *PersistingTokenSource) ForceRefresh(ctx context.Context, rejected string) (*oauth2.Token, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.unlock()
	if s.unpersisted {
		if err := s.persistLocked(ctx); err != nil {
			return nil, err
		}
	}
	if s.tok.AccessToken != rejected && s.validLocked() {
		return s.copyLocked(), nil
	}
	return s.refreshLocked(ctx)
}

func (s *PersistingTokenSource) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for token refresh: %w", ctx.Err())
	}
}

func (s *PersistingTokenSource) unlock() { <-s.sem }

func (s *PersistingTokenSource) validLocked() bool {
	if s.tok.AccessToken == "" {
		return false
	}
	if s.tok.Expiry.IsZero() {
		return true
	}
	return s.now().Add(s.margin).Before(s.tok.Expiry)
}

func (s *PersistingTokenSource) copyLocked() *oauth2.Token {
	copied := *s.tok
	return &copied
}

func (s *PersistingTokenSource) refreshLocked(ctx context.Context) (*oauth2.Token, error) {
	if s.tok.RefreshToken == "" {
		return nil, fmt.Errorf("refresh access token: %w: no refresh token stored", ErrCredentialsRevoked)
	}
	refreshCtx := ctx
	if s.httpClient != nil {
		refreshCtx = context.WithValue(ctx, oauth2.HTTPClient, s.httpClient)
	}
	// A token without access token forces the oauth2 refresher to hit the token endpoint.
	fresh, err := s.cfg.TokenSource(refreshCtx, &oauth2.Token{RefreshToken: s.tok.RefreshToken}).Token()
	if err != nil {
		return nil, fmt.Errorf("refresh access token: %w", classifyTokenError(ctx, s.cfg, err))
	}
	if fresh.AccessToken == "" {
		return nil, errors.New("refresh access token: token endpoint returned no access_token")
	}
	if fresh.RefreshToken == "" {
		fresh.RefreshToken = s.tok.RefreshToken
	}
	if fresh.Expiry.IsZero() {
		// Without expires_in, assume the documented lifetime rather than "never expires".
		fresh.Expiry = s.now().Add(AccessTokenLifetime)
	}
	s.tok = fresh
	s.unpersisted = true
	if err := s.persistLocked(ctx); err != nil {
		return nil, err
	}
	return s.copyLocked(), nil
}

func (s *PersistingTokenSource) persistLocked(ctx context.Context) error {
	if s.persist == nil {
		s.unpersisted = false
		return nil
	}
	if err := s.persist(ctx, s.copyLocked()); err != nil {
		return fmt.Errorf("persist refreshed token: %w", err)
	}
	s.unpersisted = false
	return nil
}

// classifyTokenError turns token endpoint failures into this package's kinds without quoting
// the response body: a 400/401 from the token endpoint means the grant is dead.
func classifyTokenError(ctx context.Context, cfg *oauth2.Config, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	var retrieveErr *oauth2.RetrieveError
	if !errors.As(err, &retrieveErr) {
		return &transportError{err: err}
	}
	status := 0
	if retrieveErr.Response != nil {
		status = retrieveErr.Response.StatusCode
	}
	switch {
	case status == http.StatusBadRequest || status == http.StatusUnauthorized:
		return fmt.Errorf("%w: token endpoint answered %d %s: %s", ErrCredentialsRevoked, status, retrieveErr.ErrorCode, truncateText(retrieveErr.ErrorDescription, 200))
	default:
		return &APIError{
			Status:  status,
			Message: retrieveErr.ErrorCode,
			Detail:  truncateText(retrieveErr.ErrorDescription, 200),
			Method:  http.MethodPost,
			Path:    tokenPath(cfg),
		}
	}
}

func tokenPath(cfg *oauth2.Config) string {
	u, err := url.Parse(cfg.Endpoint.TokenURL)
	if err != nil {
		return "token endpoint"
	}
	return u.Path
}
