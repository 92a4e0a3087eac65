package api

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

func (h *handlers) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok", "version": h.deps.Version})
}

// checkResult is what an unauthenticated caller may see of a dependency: a status word and a
// duration. The error itself names hosts, ports and database users, so it goes to the log.
type checkResult struct {
	Status     string `json:"status"`
	DurationMS int64  `json:"duration_ms"`
}

// readyz checks every dependency concurrently, each with its own deadline, so one hung
// dependency cannot hide the state of the others.
func (h *handlers) readyz(c *gin.Context) {
	results := make(map[string]checkResult, len(h.deps.Checks))
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
			r := checkResult{Status: "ok", DurationMS: time.Since(start).Milliseconds()}
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
	c.JSON(code, gin.H{"status": status, "checks": results})
}
