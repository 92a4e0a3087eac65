package bitbucket

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/time/rate"
)

// Bitbucket's documented budgets per user account over a rolling hour. They are "not part of
// the API" and are shared with every other tool the same user runs, so operators may want to
// configure less than these.
const (
	// DefaultRESTPerHour is the budget for /2.0/repositories/* and the other authenticated
	// /2.0 endpoints (user, workspaces, hooks).
	DefaultRESTPerHour = 1000
	// DefaultRESTBurst lets onboarding start without waiting while keeping most of the hour's
	// budget paced.
	DefaultRESTBurst = 20
	// DefaultGitPerHour is the budget for git operations over HTTPS (clone, fetch, ls-remote, push).
	DefaultGitPerHour = 60000
	// DefaultGitBurst allows a sweep of ls-remote calls to start at once.
	DefaultGitBurst = 100
)

// Limiter is a token bucket shared by every goroutine that spends one credential's budget.
type Limiter struct {
	bucket  *rate.Limiter
	perHour int
	burst   int
}

// NewLimiter returns a bucket that never allows more than perHour requests in any hour, burst
// included: the refill rate is (perHour-burst)/hour, so a full burst plus an hour of refill
// adds up to exactly perHour. burst is clamped to [1, perHour-1] so the bucket always refills.
func NewLimiter(perHour int, burst int) *Limiter {
	if perHour < 2 {
		perHour = 2
	}
	if burst < 1 {
		burst = 1
	}
	if burst > perHour-1 {
		burst = perHour - 1
	}
	refill := rate.Limit(float64(perHour-burst) / 3600)
	return &Limiter{bucket: rate.NewLimiter(refill, burst), perHour: perHour, burst: burst}
}

// Wait blocks until one request may be sent or ctx ends. When ctx has a deadline that the wait
// would overrun, it fails at once instead of sleeping until the deadline.
func (l *Limiter) Wait(ctx context.Context) error {
	if l == nil {
		return ctx.Err()
	}
	if err := l.bucket.Wait(ctx); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("wait for rate limit budget: %w", ctxErr)
		}
		// The bucket refills after ctx's deadline: the credential's budget is spent for now,
		// which is a rate limit the caller's scheduler should retry later.
		return fmt.Errorf("wait for rate limit budget: %w: %v", ErrRateLimited, err)
	}
	return nil
}

// PerHour is the configured hourly budget.
func (l *Limiter) PerHour() int { return l.perHour }

// Burst is the configured burst size.
func (l *Limiter) Burst() int { return l.burst }

// LimiterRegistry hands out one Limiter per credential (installation ID), so all clients built
// for the same credential inside one worker share one bucket.
type LimiterRegistry struct {
	perHour int
	burst   int

	mu       sync.Mutex
	limiters map[string]*Limiter
}

// NewLimiterRegistry creates a registry whose limiters all use the same budget.
func NewLimiterRegistry(perHour, burst int) *LimiterRegistry {
	return &LimiterRegistry{perHour: perHour, burst: burst, limiters: make(map[string]*Limiter)}
}

// For returns the limiter of credentialID, creating it on first use.
func (r *LimiterRegistry) For(credentialID string) *Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.limiters[credentialID]
	if !ok {
		l = NewLimiter(r.perHour, r.burst)
		r.limiters[credentialID] = l
	}
	return l
}

// Remaining is how many requests may be sent at once right now: the bucket's tokens, between 0
// and Burst when idle, negative while requests are queued waiting for the budget.
func (l *Limiter) Remaining() float64 {
	if l == nil {
		return 0
	}
	return l.bucket.Tokens()
}

// Remaining reports Remaining of every limiter handed out so far, keyed by credential ID, for
// metrics. It is nil for a nil registry.
func (r *LimiterRegistry) Remaining() map[string]float64 {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]float64, len(r.limiters))
	for id, l := range r.limiters {
		out[id] = l.Remaining()
	}
	return out
}
