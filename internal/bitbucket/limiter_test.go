package bitbucket

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLimiterNeverExceedsHourlyBudget(t *testing.T) {
	cases := []struct {
		perHour, burst         int
		wantBurst              int
		wantRefillPerHourTimes int
	}{
		{DefaultRESTPerHour, DefaultRESTBurst, DefaultRESTBurst, DefaultRESTPerHour - DefaultRESTBurst},
		{DefaultGitPerHour, DefaultGitBurst, DefaultGitBurst, DefaultGitPerHour - DefaultGitBurst},
		{10, 50, 9, 1},
		{0, 0, 1, 1},
	}
	for _, tc := range cases {
		l := NewLimiter(tc.perHour, tc.burst)
		if l.Burst() != tc.wantBurst || l.bucket.Burst() != tc.wantBurst {
			t.Errorf("NewLimiter(%d, %d) burst = %d, want %d", tc.perHour, tc.burst, l.Burst(), tc.wantBurst)
		}
		perHour := float64(l.bucket.Limit()) * 3600
		if diff := perHour - float64(tc.wantRefillPerHourTimes); diff > 1e-6 || diff < -1e-6 {
			t.Errorf("NewLimiter(%d, %d) refills %.3f per hour, want %d", tc.perHour, tc.burst, perHour, tc.wantRefillPerHourTimes)
		}
		if total := float64(l.Burst()) + perHour; total > float64(l.PerHour())+1e-6 {
			t.Errorf("NewLimiter(%d, %d): burst + hourly refill = %.1f exceeds the budget %d", tc.perHour, tc.burst, total, l.PerHour())
		}
	}
}

func TestLimiterIsSharedSafelyByGoroutines(t *testing.T) {
	// A bucket with burst 30 and almost no refill: 100 goroutines race for it and exactly 30
	// get through before the deadline check refuses the rest.
	l := NewLimiter(31, 30)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var granted atomic.Int32
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Wait(ctx); err == nil {
				granted.Add(1)
			}
		}()
	}
	wg.Wait()
	if granted.Load() != 30 {
		t.Errorf("granted %d, want exactly the burst of 30", granted.Load())
	}
}

func TestLimiterRespectsCancellation(t *testing.T) {
	l := NewLimiter(2, 1)
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	var nilLimiter *Limiter
	if err := nilLimiter.Wait(context.Background()); err != nil {
		t.Errorf("nil limiter must not block: %v", err)
	}
}
