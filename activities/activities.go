// Package activities holds GitSec's Temporal activities: methods on Activities, which carries
// their dependencies. Activities do the I/O that workflows must not.
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
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/workflows"
)

// Activities bundles every activity with its dependencies.
type Activities struct {
	Store   *store.Store
	Clients *providerclient.Factory
	Box     *secretbox.Box
	// PublicURL is GitSec's externally reachable base URL; webhook URLs are built from it.
	PublicURL string
	Logger    *slog.Logger

	// Backups: object storage, this worker's mirror directory and host task queue, and the
	// Temporal client that wakes backup workflows.
	Archive   *archive.Store
	MirrorDir string
	HostQueue string
	Temporal  client.Client
	Backups   backupqueue.Settings

	// Sweep configures the per-installation sweep schedules and their checks.
	Sweep SweepSettings
	// MirrorMaxBytes bounds the disk the mirrors under MirrorDir may use (0: unlimited); see
	// reserveMirrorSpace.
	MirrorMaxBytes int64
	// mirrors tracks the mirror directories in use on this worker, so that cleanup and
	// eviction never remove one under a running backup.
	mirrors mirrorLeases
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
