package activities

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
)

// holdStagingLease takes a staging lease on the repository's storage (see
// store.AcquireStorageLease), waiting while a retention sweep of the repository holds it (a
// sweep lasts seconds). waiting reports the wait (a heartbeat step). The returned release is
// safe to call once the context is cancelled.
func holdStagingLease(ctx context.Context, st *store.Store, tenantID, repoID uuid.UUID, ttl time.Duration, waiting func()) (release func(), err error) {
	for {
		id, ok, err := st.AcquireStorageLease(ctx, tenantID, repoID, store.LeaseStaging, ttl)
		if err != nil {
			return nil, fmt.Errorf("staging lease: %w", err)
		}
		if ok {
			return func() { _ = st.ReleaseStorageLease(context.WithoutCancel(ctx), id) }, nil
		}
		if waiting != nil {
			waiting()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("staging lease: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
