package bitbucket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel kinds, matched with errors.Is against any error this package returns.
var (
	// ErrCredentialsRevoked means the credential no longer works even after a forced refresh:
	// the user revoked the consumer, the refresh token was rejected, or the account lost access.
	// Retrying cannot help; the installation needs to be re-authorised.
	ErrCredentialsRevoked = errors.New("bitbucket: credentials revoked or invalid")
	// ErrForbidden means the credential is valid but lacks a scope or a permission (403).
	ErrForbidden = errors.New("bitbucket: forbidden")
	// ErrNotFound means the workspace, repository, pull request or hook does not exist (404).
	ErrNotFound = errors.New("bitbucket: not found")
	// ErrGone means Bitbucket removed the endpoint (410, e.g. CHANGE-2770). It must be surfaced
	// as an alert, never treated as an empty result.
	ErrGone = errors.New("bitbucket: endpoint gone")
	// ErrRateLimited means the 429 budget was still exhausted after the client's bounded retries.
	ErrRateLimited = errors.New("bitbucket: rate limited")
	// ErrServer means Bitbucket kept answering 5xx after the client's bounded retries.
	ErrServer = errors.New("bitbucket: server error")
)

// APIError is a non-2xx answer from the REST API. It never carries the access token: the
// token travels in a header that is not recorded, and Path holds no query string.
type APIError struct {
	Status  int
	Message string
	Detail  string
	Method  string
	Path    string
	// RetryAfter is the server's Retry-After hint, zero when absent (Bitbucket normally sends none).
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bitbucket %s %s: %d", e.Method, e.Path, e.Status)
	if text := http.StatusText(e.Status); text != "" {
		b.WriteString(" " + text)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Detail != "" {
		b.WriteString(" (" + e.Detail + ")")
	}
	return b.String()
}

// Is maps the HTTP status onto the package's sentinel kinds so callers can write
// errors.Is(err, bitbucket.ErrNotFound) without inspecting status codes.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrCredentialsRevoked:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrGone:
		return e.Status == http.StatusGone
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests
	case ErrServer:
		return e.Status >= 500 && e.Status <= 599
	}
	return false
}

// IsRetryable reports whether a later attempt may succeed: rate limiting, server errors and
// transport failures. Cancellation, deadlines and every other 4xx are final.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status == http.StatusTooManyRequests || (apiErr.Status >= 500 && apiErr.Status <= 599)
	}
	if errors.Is(err, ErrCredentialsRevoked) {
		return false
	}
	if errors.Is(err, ErrRateLimited) || errors.Is(err, ErrServer) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var transportErr *transportError
	return errors.As(err, &transportErr)
}

// transportError marks a failure to get any HTTP answer (connection reset, DNS, EOF), which
// is worth retrying like a 5xx.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// errorEnvelope is Bitbucket's JSON error body. detail is a string for most errors but an
// object for scope errors, so it is kept raw and flattened afterwards.
type errorEnvelope struct {
	Type  string `json:"type"`
	Error struct {
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	} `json:"error"`
}

// maxErrorBody bounds how much of an error answer is read: bodies are for humans and a
// misbehaving proxy must not make the client buffer megabytes.
const maxErrorBody = 64 << 10

// newAPIError builds the typed error from a response body. Non-JSON bodies (the text/plain 429,
// proxy HTML pages) become the message, trimmed and truncated.
func newAPIError(method, path string, status int, body []byte) *APIError {
	apiErr := &APIError{Status: status, Method: method, Path: path}
	var env errorEnvelope
	if err := json.Unmarshal(body, &env); err == nil && env.Error.Message != "" {
		apiErr.Message = env.Error.Message
		apiErr.Detail = flattenDetail(env.Error.Detail)
		return apiErr
	}
	apiErr.Message = truncateText(string(bytes.TrimSpace(body)), 300)
	return apiErr
}

func flattenDetail(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return ""
	}
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		return text
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return ""
	}
	return truncateText(compact.String(), 500)
}

func truncateText(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
