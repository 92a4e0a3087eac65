package bitbucket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Retry defaults: a handful of quick, jittered attempts inside one activity attempt. Longer
// waits belong to Temporal's retry policy (see the package documentation).
const (
	DefaultMaxAttempts   = 5
	DefaultBaseBackoff   = 2 * time.Second
	DefaultMaxBackoff    = time.Minute
	DefaultMaxRetryAfter = 5 * time.Minute
)

// maxSuccessBody bounds a decoded JSON answer; the largest real pages are a few MB.
const maxSuccessBody = 64 << 20

// Options configures a Client. Base URLs are configuration: production uses
// https://api.bitbucket.org and https://bitbucket.org, tests use the emulator.
type Options struct {
	// APIBaseURL is the REST host, e.g. https://api.bitbucket.org (paths start with /2.0/).
	APIBaseURL string
	// GitBaseURL is the git smart-HTTP host, e.g. https://bitbucket.org.
	GitBaseURL string
	// TokenSource yields the access token. A *PersistingTokenSource (or any TokenRefresher)
	// lets the client recover from a 401 with one forced refresh.
	TokenSource oauth2.TokenSource
	// HTTPClient defaults to a client with a 60 s timeout.
	HTTPClient *http.Client
	// Limiter paces REST calls; share one per credential (LimiterRegistry). Nil means unpaced.
	Limiter *Limiter
	// GitLimiter paces git operations: GitAuth spends one unit per call. Nil means unpaced.
	GitLimiter *Limiter
	// Logger receives retry and refresh events, never secrets. Defaults to slog.Default().
	Logger *slog.Logger
	// MaxAttempts bounds HTTP attempts per call for 429/5xx/transport failures (default 5).
	MaxAttempts int
	// BaseBackoff and MaxBackoff shape the exponential full-jitter backoff.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// MaxRetryAfter is the longest Retry-After the client sleeps through; a longer one is
	// returned as an error (with APIError.RetryAfter set) for the caller's scheduler to honour.
	MaxRetryAfter time.Duration
	// UserAgent is sent on every request.
	UserAgent string
	// OnRequest, when set, is told of every HTTP attempt to the REST API and every git
	// operation (see RequestKindREST, RequestKindGit and RequestClass), for metrics. It must
	// be cheap and safe for concurrent use.
	OnRequest func(kind, class string)
}

// Client talks to Bitbucket Cloud REST 2.0 through one request path: pacing, auth, retries,
// error decoding and paging are the same for every method.
type Client struct {
	apiBase       string
	apiHost       *url.URL
	gitBase       string
	configErr     error
	tokens        oauth2.TokenSource
	httpClient    *http.Client
	limiter       *Limiter
	gitLimiter    *Limiter
	log           *slog.Logger
	maxAttempts   int
	baseBackoff   time.Duration
	maxBackoff    time.Duration
	maxRetryAfter time.Duration
	userAgent     string
	onRequest     func(kind, class string)

	// sleep and jitter are replaced by in-package tests to observe delays without waiting.
	sleep  func(ctx context.Context, d time.Duration) error
	jitter func(ceiling time.Duration) time.Duration
}

// New builds a Client. Configuration mistakes (a malformed base URL, no token source) are
// reported by every call rather than panicking here.
func New(opts Options) *Client {
	c := &Client{
		gitBase:       strings.TrimRight(opts.GitBaseURL, "/"),
		tokens:        opts.TokenSource,
		httpClient:    opts.HTTPClient,
		limiter:       opts.Limiter,
		gitLimiter:    opts.GitLimiter,
		log:           opts.Logger,
		maxAttempts:   opts.MaxAttempts,
		baseBackoff:   opts.BaseBackoff,
		maxBackoff:    opts.MaxBackoff,
		maxRetryAfter: opts.MaxRetryAfter,
		userAgent:     opts.UserAgent,
		onRequest:     opts.OnRequest,
		sleep:         sleepContext,
		jitter:        fullJitter,
	}
	if c.httpClient == nil {
		c.httpClient = &http.Client{Timeout: 60 * time.Second}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.maxAttempts < 1 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.baseBackoff <= 0 {
		c.baseBackoff = DefaultBaseBackoff
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = DefaultMaxBackoff
	}
	if c.maxRetryAfter <= 0 {
		c.maxRetryAfter = DefaultMaxRetryAfter
	}
	if c.userAgent == "" {
		c.userAgent = "gitsec"
	}
	// Accept a base given with the /2.0 suffix too; every path below carries it.
	base := strings.TrimSuffix(strings.TrimRight(opts.APIBaseURL, "/"), "/2.0")
	parsed, err := url.Parse(base)
	switch {
	case err != nil:
		c.configErr = fmt.Errorf("bitbucket client: parse API base URL: %w", err)
	case parsed.Scheme == "" || parsed.Host == "":
		c.configErr = fmt.Errorf("bitbucket client: API base URL %q needs a scheme and host", opts.APIBaseURL)
	case opts.TokenSource == nil:
		c.configErr = errors.New("bitbucket client: no token source configured")
	}
	c.apiBase = base
	c.apiHost = parsed
	return c
}

// call is one logical API operation: it may become several HTTP attempts.
type call struct {
	method string
	target string // path under the API base ("/2.0/...") or an absolute `next` URL
	query  url.Values
	body   any
	out    any
}

// do is the single request path every method goes through.
func (c *Client) do(ctx context.Context, cl call) error {
	if c.configErr != nil {
		return c.configErr
	}
	endpoint, err := c.resolve(cl.target, cl.query)
	if err != nil {
		return err
	}
	var payload []byte
	if cl.body != nil {
		payload, err = json.Marshal(cl.body)
		if err != nil {
			return fmt.Errorf("encode %s %s body: %w", cl.method, endpoint.Path, err)
		}
	}
	// A POST that reached the server may have been applied, so only a 429 (rejected before any
	// work) is retried for it; repeating a create is the caller's decision.
	idempotent := cl.method != http.MethodPost

	refreshed := false
	for attempt := 1; ; attempt++ {
		if err := c.limiter.Wait(ctx); err != nil {
			return fmt.Errorf("%s %s: %w", cl.method, endpoint.Path, err)
		}
		tok, err := c.token(ctx)
		if err != nil {
			return fmt.Errorf("%s %s: %w", cl.method, endpoint.Path, err)
		}
		resp, err := c.send(ctx, cl.method, endpoint, payload, tok.AccessToken)
		c.observeREST(resp, err)
		countRequest(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s %s: %w", cl.method, endpoint.Path, ctx.Err())
			}
			failure := fmt.Errorf("%s %s: %w", cl.method, endpoint.Path, &transportError{err: err})
			if !idempotent || attempt >= c.maxAttempts {
				return failure
			}
			if err := c.backoff(ctx, cl.method, endpoint.Path, attempt, 0, 0); err != nil {
				return err
			}
			continue
		}

		if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
			return c.decode(resp, cl.method, endpoint.Path, cl.out)
		}

		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		drainAndClose(resp)
		apiErr := newAPIError(cl.method, endpoint.Path, resp.StatusCode, body)
		apiErr.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())

		switch {
		case resp.StatusCode == http.StatusUnauthorized:
			refresher, ok := c.tokens.(TokenRefresher)
			if refreshed || !ok {
				return apiErr
			}
			refreshed = true
			c.log.InfoContext(ctx, "bitbucket rejected the access token; forcing one refresh",
				slog.String("method", cl.method), slog.String("path", endpoint.Path))
			if _, err := refresher.ForceRefresh(ctx, tok.AccessToken); err != nil {
				return fmt.Errorf("%s %s: %w", cl.method, endpoint.Path, err)
			}
			// The retry after a refresh is not a failure-driven attempt.
			attempt--
			continue
		case resp.StatusCode == http.StatusTooManyRequests || (resp.StatusCode >= 500 && idempotent):
			if attempt >= c.maxAttempts {
				return apiErr
			}
			if apiErr.RetryAfter > c.maxRetryAfter {
				return apiErr
			}
			if err := c.backoff(ctx, cl.method, endpoint.Path, attempt, resp.StatusCode, apiErr.RetryAfter); err != nil {
				return err
			}
			continue
		default:
			return apiErr
		}
	}
}

func (c *Client) send(ctx context.Context, method string, endpoint *url.URL, payload []byte, accessToken string) (*http.Response, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.httpClient.Do(req)
}

func (c *Client) token(ctx context.Context) (*oauth2.Token, error) {
	var (
		tok *oauth2.Token
		err error
	)
	if refresher, ok := c.tokens.(TokenRefresher); ok {
		tok, err = refresher.TokenContext(ctx)
	} else {
		tok, err = c.tokens.Token()
	}
	if err != nil {
		return nil, fmt.Errorf("get access token: %w", err)
	}
	if tok == nil || tok.AccessToken == "" {
		return nil, fmt.Errorf("get access token: %w: token source returned no access token", ErrCredentialsRevoked)
	}
	return tok, nil
}

func (c *Client) decode(resp *http.Response, method, path string, out any) error {
	defer drainAndClose(resp)
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxSuccessBody)).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return nil
}

// backoff sleeps before the next attempt: the server's Retry-After when it sent one, else
// exponential backoff with full jitter so that many workers hitting one budget spread out.
func (c *Client) backoff(ctx context.Context, method, path string, attempt, status int, retryAfter time.Duration) error {
	delay := retryAfter
	if delay <= 0 {
		ceiling := c.baseBackoff << min(attempt-1, 30)
		if ceiling <= 0 || ceiling > c.maxBackoff {
			ceiling = c.maxBackoff
		}
		delay = c.jitter(ceiling)
	}
	c.log.WarnContext(ctx, "bitbucket request failed; retrying",
		slog.String("method", method), slog.String("path", path), slog.Int("status", status),
		slog.Int("attempt", attempt), slog.Int("max_attempts", c.maxAttempts), slog.Duration("delay", delay))
	if err := c.sleep(ctx, delay); err != nil {
		return fmt.Errorf("%s %s: wait before retry: %w", method, path, err)
	}
	return nil
}

// resolve turns a path or a `next` link into a URL. `next` links are followed verbatim but
// only on the API host, so a forged or misconfigured link cannot receive the bearer token.
func (c *Client) resolve(target string, query url.Values) (*url.URL, error) {
	var (
		u   *url.URL
		err error
	)
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		u, err = url.Parse(target)
		if err != nil {
			return nil, fmt.Errorf("parse next link: %w", err)
		}
		if u.Scheme != c.apiHost.Scheme || u.Host != c.apiHost.Host {
			return nil, fmt.Errorf("next link points to %s://%s, not the API host %s://%s", u.Scheme, u.Host, c.apiHost.Scheme, c.apiHost.Host)
		}
	} else {
		u, err = url.Parse(c.apiBase + target)
		if err != nil {
			return nil, fmt.Errorf("build URL for %s: %w", target, err)
		}
	}
	if len(query) > 0 {
		merged := u.Query()
		for key, values := range query {
			for _, v := range values {
				merged.Add(key, v)
			}
		}
		u.RawQuery = merged.Encode()
	}
	return u, nil
}

// pageEnvelope is Bitbucket's paging envelope. Only values and pagelen are always present.
type pageEnvelope[T any] struct {
	Pagelen int    `json:"pagelen"`
	Page    int    `json:"page"`
	Size    *int   `json:"size"`
	Next    string `json:"next"`
	Values  []T    `json:"values"`
}

// walkPages follows `next` until the last page, calling fn for every value. A body without
// `values` is an error, never an empty list.
func walkPages[T any](ctx context.Context, c *Client, path string, query url.Values, fn func(T) error) error {
	target, q := path, query
	seen := map[string]bool{}
	for {
		var page pageEnvelope[T]
		if err := c.do(ctx, call{method: http.MethodGet, target: target, query: q, out: &page}); err != nil {
			return err
		}
		if page.Values == nil {
			return fmt.Errorf("GET %s: response is not a page (no values field)", path)
		}
		for _, v := range page.Values {
			if err := fn(v); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		if seen[page.Next] {
			return fmt.Errorf("GET %s: next link loops back to an earlier page", path)
		}
		seen[page.Next] = true
		target, q = page.Next, nil
	}
}

// listAll collects every value of a paged collection.
func listAll[T any](ctx context.Context, c *Client, path string, query url.Values) ([]T, error) {
	all := []T{}
	err := walkPages(ctx, c, path, query, func(v T) error {
		all = append(all, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return all, nil
}

func pagelenQuery(pagelen int) url.Values {
	q := url.Values{}
	if pagelen > 0 {
		q.Set("pagelen", strconv.Itoa(pagelen))
	}
	return q
}

func parseRetryAfter(header string, now time.Time) time.Duration {
	header = strings.TrimSpace(header)
	if header == "" {
		return 0
	}
	if seconds, err := strconv.Atoi(header); err == nil {
		if seconds < 0 {
			return 0
		}
		return time.Duration(seconds) * time.Second
	}
	if when, err := http.ParseTime(header); err == nil {
		if d := when.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

func fullJitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func drainAndClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}
