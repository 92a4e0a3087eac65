package activities

import (
	"context"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/gitmirror"
)

// BackupProgress is the heartbeat detail of a backup's staging: the step under way and how far
// its fetch or its file transfer (bytes done of the file's size) got. Temporal shows the latest
// one on the pending activity.
type BackupProgress struct {
	Step     string                 `json:"step"`
	Fetch    *gitmirror.Progress    `json:"fetch,omitempty"`
	Transfer *archive.TransferEvent `json:"transfer,omitempty"`
}

// heartbeat keeps an activity's heartbeat going for its whole life with the latest progress as
// details. The byte streams (fetch, hash, upload, download) report as they move, and a ticker
// repeats the latest report in between, so that Temporal never takes a long step without
// reports (hashing a big pack, reading its commits, waiting for an earlier attempt) for a dead
// worker and starts a second attempt beside it. A worker that dies takes the ticker with it.
type heartbeat struct {
	ctx  context.Context
	mu   sync.Mutex
	last BackupProgress
	quit chan struct{}
	done chan struct{}
}

func startHeartbeat(ctx context.Context) *heartbeat {
	h := &heartbeat{ctx: ctx, quit: make(chan struct{}), done: make(chan struct{})}
	every := heartbeatEvery(activity.GetInfo(ctx).HeartbeatTimeout)
	go func() {
		defer close(h.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-h.quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				h.send()
			}
		}
	}()
	return h
}

// heartbeatEvery beats several times per heartbeat timeout: the SDK sends at most one
// heartbeat per 80% of the timeout and keeps only the latest details, so beating often costs
// no requests.
func heartbeatEvery(timeout time.Duration) time.Duration {
	every := timeout / 4
	if timeout <= 0 || every > 10*time.Second {
		every = 10 * time.Second
	}
	return max(every, 50*time.Millisecond)
}

// stop ends the ticker; no heartbeat is sent after it returns.
func (h *heartbeat) stop() {
	close(h.quit)
	<-h.done
}

func (h *heartbeat) step(name string) { h.report(BackupProgress{Step: name}) }

func (h *heartbeat) report(p BackupProgress) {
	h.mu.Lock()
	h.last = p
	h.mu.Unlock()
	h.send()
}

func (h *heartbeat) send() {
	h.mu.Lock()
	p := h.last
	h.mu.Unlock()
	activity.RecordHeartbeat(h.ctx, p)
}
