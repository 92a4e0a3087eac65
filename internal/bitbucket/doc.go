// Package bitbucket is GitSec's client for Bitbucket Cloud: OAuth 2.0 consumer tokens, the REST
// 2.0 endpoints a backup needs, git-over-HTTPS credentials, and webhook signature checks and
// payload decoding.
//
// Production talks to https://api.bitbucket.org, https://bitbucket.org/site/oauth2 and
// https://bitbucket.org; tests talk to the emulator. Only the base URLs differ: every call goes
// through the same request path.
//
// # One request path
//
// Every REST call waits on the credential's Limiter, attaches the current access token,
// decodes JSON, follows `next` links (only on the API host, so the bearer token never leaves
// it), and turns non-2xx answers into *APIError with Bitbucket's message and detail. Errors
// match the sentinels with errors.Is: ErrCredentialsRevoked (401 after one forced refresh, or a
// refresh the token endpoint rejected), ErrForbidden (403), ErrNotFound (404), ErrGone (410: a
// removed endpoint such as the CHANGE-2770 cross-workspace APIs, which must raise an alert and
// never read as "nothing there"), ErrRateLimited (429 after retries) and ErrServer (5xx after
// retries). A collection body without `values` is an error, never an empty list.
//
// # Retry policy
//
// There are two retry loops and they must not multiply blindly.
//
// Inner loop (this package): within one call, 429, 5xx and transport failures are retried up
// to Options.MaxAttempts HTTP attempts in total (default 5), sleeping an exponential backoff
// with full jitter (a uniform delay in [0, min(MaxBackoff, BaseBackoff·2^(n-1))], defaults 2 s
// and 1 min) so that workers sharing one user's budget spread out. Bitbucket's 429 is
// text/plain without Retry-After, so there is nothing to read; if a Retry-After ever appears it
// is honoured, up to Options.MaxRetryAfter (default 5 min) — a longer one is returned at once
// with APIError.RetryAfter set so the caller can schedule the retry instead of holding an
// activity slot. Every attempt, retries included, waits on the Limiter, so retries spend the
// same hourly budget as first attempts and can never exceed it. POSTs (creating repositories
// and hooks) are retried only on 429, which Bitbucket sends before doing any work; a 5xx on a
// POST may have been applied and is returned to the caller, who lists before trying again. A
// 401 triggers exactly one forced token refresh and one more attempt, outside the count.
//
// Outer loop (Temporal): an activity attempt that still fails with a retryable error
// (IsRetryable) fails, and the activity's RetryPolicy schedules the next attempt minutes later.
// Keep that policy's maximum attempts modest: the worst case is inner × outer HTTP attempts,
// all against the same hourly budget. Errors for which IsRetryable is false
// (ErrCredentialsRevoked, ErrForbidden, ErrNotFound, ErrGone, other 4xx) should be returned as
// non-retryable application errors: repeating them only burns budget.
//
// # Rate limits
//
// Bitbucket counts authenticated calls per user account over a rolling hour: 1,000 for
// /2.0/repositories/* and the other REST endpoints (DefaultRESTPerHour), 60,000 for git over
// HTTPS (DefaultGitPerHour). OAuth consumer traffic gets no X-RateLimit headers, so the client
// paces itself: a token bucket per credential, shared through LimiterRegistry by every client of
// that credential in a worker, whose refill is chosen so that burst plus an hour of refill never
// exceeds the hourly budget. Across workers Temporal's task-queue rate limits do the sharing.
//
// # Tokens
//
// Access tokens live two hours. PersistingTokenSource refreshes them DefaultRefreshMargin
// before expiry, serialises refreshes (a rotating refresh token must not be used twice), and
// hands every new token to a persist callback before using it: the refresh token a refresh
// returns is the only one certain to work next time. Tokens never appear in errors or logs;
// git credentials come from GitAuth as go-git Basic auth (user x-token-auth), whose String()
// masks the password, and CloneURL never embeds them.
//
// # Webhooks
//
// VerifySignature checks X-Hub-Signature (sha256=<hex HMAC-SHA256 of the raw body>) in
// constant time before anything is decoded; DecodeEvent then decodes the body by X-Event-Key
// into typed events, rejecting unknown keys and payloads missing the fields GitSec acts on.
package bitbucket
