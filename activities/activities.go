// Package activities holds GitSec's Temporal activities: methods on Activities, which carries
// their dependencies. Activities do the I/O that workflows must not.
package activities

import (
	"context"
	"log/slog"
	"time"

	"github.com/gitsec/gitsec/internal/store"
)

// Store is what the activities need from the metadata store.
type Store interface {
	PurgeExpired(ctx context.Context, now, dedupBefore time.Time) (store.PurgeResult, error)
}

// Activities bundles every activity with its dependencies.
type Activities struct {
	Store  Store
	Logger *slog.Logger
}
