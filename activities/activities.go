// Package activities holds GitSec's Temporal activities: methods on one struct per feature,
// each carrying only that feature's dependencies. Activities do the I/O that workflows must not.
package activities

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// Each feature's activities are the exported methods of one struct holding only what they need:
// Onboarding, Backups, Sweeps, Housekeeping and Uninstall. The worker registers every struct,
// so a method's name is its activity's name.

// Onboarding runs the steps of connecting an installation: account, workspaces, webhooks and
// the repository list.
type Onboarding struct {
	Store   *store.Store
	Clients *providerclient.Factory
	// Box seals the webhook secrets that onboarding generates.
	Box *secretbox.Box
	// PublicURL is GitSec's externally reachable base URL; webhook URLs are built from it.
	PublicURL string
	Logger    *slog.Logger
}

// Backups runs backups: host-side staging next to this worker's mirrors, the commit and the
// record of outcomes, and waking backup workflows. One per worker process: its mirror leases
// are shared by the host-queue activities and CleanMirrors, which must see the same leases.
type Backups struct {
	Store   *store.Store
	Clients *providerclient.Factory
	Archive *archive.Store
	// MirrorDir holds this worker's mirrors and HostQueue is its own task queue (mirror affinity).
	MirrorDir string
	HostQueue string
	// MirrorMaxBytes bounds the disk the mirrors under MirrorDir may use (0: unlimited); see
	// reserveMirrorSpace.
	MirrorMaxBytes int64
	// Temporal and Queue wake the backup workflows (StartBackups).
	Temporal client.Client
	Queue    backupqueue.Settings
	Logger   *slog.Logger
	// Metrics records backup runs and snapshot times; nil records nothing.
	Metrics *metrics.Metrics
	// Consolidate bounds each repository's restore chain (GITSEC_CONSOLIDATE_MAX_PACKS,
	// GITSEC_CONSOLIDATE_MAX_INCREMENTAL_BYTES).
	Consolidate archive.ConsolidatePolicy
	// mirrors tracks the mirror directories in use on this worker, so that cleanup and
	// eviction never remove one under a running backup.
	mirrors mirrorLeases
}

// Sweeps runs the scheduled sweeps: their schedules, the change checks and the wake-ups.
type Sweeps struct {
	Store   *store.Store
	Clients *providerclient.Factory
	// Archive holds the manifests the change checks compare upstream refs with.
	Archive  *archive.Store
	Temporal client.Client
	// Queue wakes the backup workflows of changed repositories; its task queue is the default
	// of the sweep schedules.
	Queue    backupqueue.Settings
	Settings SweepSettings
	Logger   *slog.Logger
}

// Housekeeping purges expired rows.
type Housekeeping struct {
	Store  *store.Store
	Logger *slog.Logger
}

// Uninstall removes what GitSec registered at Bitbucket for an installation.
type Uninstall struct {
	Store   *store.Store
	Clients *providerclient.Factory
}

// parseRef turns the IDs of a workflow input into UUIDs; a malformed one is a bug upstream,
// so it fails without retries.
func parseRef(ref workflows.InstallationRef) (tenantID, installationID uuid.UUID, err error) {
	if tenantID, err = uuid.Parse(ref.TenantID); err != nil {
		return uuid.Nil, uuid.Nil, temporal.NewNonRetryableApplicationError("invalid tenant ID "+ref.TenantID, domain.ErrTypeInvalidInput, nil)
	}
	if installationID, err = uuid.Parse(ref.InstallationID); err != nil {
		return uuid.Nil, uuid.Nil, temporal.NewNonRetryableApplicationError("invalid installation ID "+ref.InstallationID, domain.ErrTypeInvalidInput, nil)
	}
	return tenantID, installationID, nil
}

// classify marks errors that retrying cannot fix as non-retryable, with stable type names the
// workflows react to. Bitbucket errors never carry tokens (the client guarantees it).
func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	wrapped := fmt.Errorf("%s: %w", what, err)
	switch {
	case errors.Is(err, store.ErrInstallationRemoved):
		return temporal.NewNonRetryableApplicationError(wrapped.Error(), domain.ErrTypeInstallationRemoved, nil)
	case errors.Is(err, bitbucket.ErrCredentialsRevoked):
		return temporal.NewNonRetryableApplicationError(wrapped.Error(), domain.ErrTypeCredentialsRevoked, nil)
	case errors.Is(err, bitbucket.ErrForbidden):
		return temporal.NewNonRetryableApplicationError(wrapped.Error(), domain.ErrTypeForbidden, nil)
	case errors.Is(err, bitbucket.ErrGone):
		return temporal.NewNonRetryableApplicationError(wrapped.Error()+" (Bitbucket removed this endpoint: GitSec must be updated)", domain.ErrTypeEndpointGone, nil)
	case errors.Is(err, bitbucket.ErrNotFound):
		return temporal.NewNonRetryableApplicationError(wrapped.Error(), domain.ErrTypeNotFound, nil)
	case errors.Is(err, store.ErrConflict):
		return temporal.NewNonRetryableApplicationError(wrapped.Error(), domain.ErrTypeAlreadyConnected, nil)
	case errors.Is(err, store.ErrNotFound):
		return temporal.NewNonRetryableApplicationError(wrapped.Error(), domain.ErrTypeInstallationNotFound, nil)
	}
	return wrapped
}
