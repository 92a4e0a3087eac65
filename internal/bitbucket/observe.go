package bitbucket

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// Request kinds passed to Options.OnRequest: which of Bitbucket's budgets a request spends.
const (
	// RequestKindREST is one HTTP attempt to the REST API: every retry, and the retry after a
	// forced token refresh, is a request of its own.
	RequestKindREST = "rest"
	// RequestKindGit is one git operation (ls-remote, fetch, push) run by WithGitAuth.
	RequestKindGit = "git"
)

// Request classes passed to Options.OnRequest: the status class of the answer, or
// RequestClassError when there was no HTTP answer to classify.
const (
	RequestClass2xx   = "2xx"
	RequestClass3xx   = "3xx"
	RequestClass4xx   = "4xx"
	RequestClass5xx   = "5xx"
	RequestClassError = "error"
)

// RequestClass is the class of an HTTP status: "2xx" to "5xx", RequestClassError otherwise.
func RequestClass(status int) string {
	switch {
	case status >= 200 && status <= 299:
		return RequestClass2xx
	case status >= 300 && status <= 399:
		return RequestClass3xx
	case status >= 400 && status <= 499:
		return RequestClass4xx
	case status >= 500 && status <= 599:
		return RequestClass5xx
	}
	return RequestClassError
}

// gitClass classifies the outcome of one git operation. The git transport reports 401, 403 and
// 404 as sentinel errors and other statuses as *githttp.Err inside a *plumbing.UnexpectedError
// (which does not unwrap); anything else (a network failure, a cancelled context, a local error
// while writing the pack) has no status and counts as an error.
func gitClass(err error) string {
	var statusErr *githttp.Err
	var unexpected *plumbing.UnexpectedError
	if errors.As(err, &unexpected) && unexpected.Err != nil {
		errors.As(unexpected.Err, &statusErr)
	} else {
		errors.As(err, &statusErr)
	}
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate), errors.Is(err, transport.ErrEmptyRemoteRepository):
		return RequestClass2xx
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrRepositoryNotFound):
		return RequestClass4xx
	case statusErr != nil && statusErr.Response != nil:
		return RequestClass(statusErr.Response.StatusCode)
	}
	return RequestClassError
}

func (c *Client) observe(kind, class string) {
	if c.onRequest != nil {
		c.onRequest(kind, class)
	}
}

func (c *Client) observeREST(resp *http.Response, err error) {
	if err != nil || resp == nil {
		c.observe(RequestKindREST, RequestClassError)
		return
	}
	c.observe(RequestKindREST, RequestClass(resp.StatusCode))
}

// RequestCounter counts the REST requests made with a context that carries it (retries
// included): a step that must report its API cost attaches one with WithRequestCounter.
type RequestCounter struct{ n atomic.Int64 }

// Count is the number of requests so far.
func (r *RequestCounter) Count() int64 {
	if r == nil {
		return 0
	}
	return r.n.Load()
}

type requestCounterKey struct{}

// WithRequestCounter returns a context whose REST requests are counted in r.
func WithRequestCounter(ctx context.Context, r *RequestCounter) context.Context {
	return context.WithValue(ctx, requestCounterKey{}, r)
}

func countRequest(ctx context.Context) {
	if r, ok := ctx.Value(requestCounterKey{}).(*RequestCounter); ok && r != nil {
		r.n.Add(1)
	}
}
