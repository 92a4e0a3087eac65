package api

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

func (h *handlers) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, Health{Status: "ok", Version: h.deps.Version})
}

// readyz checks every dependency concurrently, each with its own deadline, so one hung
// dependency cannot hide the state of the others.
func (h *handlers) readyz(c *gin.Context) {
	results := make(map[string]CheckResult, len(h.deps.Checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, chk := range h.deps.Checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(c.Request.Context(), 3*time.Second)
			defer cancel()
			start := time.Now()
			err := chk.Fn(ctx)
			r := CheckResult{Status: "ok", DurationMS: time.Since(start).Milliseconds()}
			if err != nil {
				r.Status = "down"
				h.deps.Logger.WarnContext(ctx, "readiness check failed", "check", chk.Name,
					"request_id", c.GetString(ctxRequestID), "duration_ms", r.DurationMS, "error", err.Error())
			}
			mu.Lock()
			results[chk.Name] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	status, code := "ok", http.StatusOK
	for _, r := range results {
		if r.Status != "ok" {
			status, code = "unavailable", http.StatusServiceUnavailable
		}
	}
	c.JSON(code, Readiness{Status: status, Checks: results})
}
