package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/domain"
)

// Activity option presets. Every activity call picks one by name so timeouts and retries are
// decided in one place, not as literals scattered through workflow code.

// DatabaseActivity suits short Postgres-only steps: quick timeout, a few fast retries.
func DatabaseActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
			MaximumAttempts:    10,
		},
	})
}

// ProviderActivity suits calls to Bitbucket's REST API. The client already retries 429 and 5xx
// a bounded number of times with jittered backoff inside one attempt, so Temporal's retry is
// the slow outer loop: few attempts, long intervals, and never for errors marked
// non-retryable (CredentialsRevoked, Forbidden, NotFound, EndpointGone).
func ProviderActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Minute,
		HeartbeatTimeout:    2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        30 * time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        10 * time.Minute,
			MaximumAttempts:        6,
			NonRetryableErrorTypes: NonRetryableProviderErrors,
		},
	})
}

// StorageActivity suits short steps against object storage (reading and writing manifests):
// quick timeout, a few fast retries, none for a conflict that retrying cannot resolve.
func StorageActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			MaximumAttempts:        10,
			NonRetryableErrorTypes: []string{domain.ErrTypeSnapshotConflict, domain.ErrTypeSnapshotMissing, domain.ErrTypeInvalidInput},
		},
	})
}

// NonRetryableProviderErrors are never worth retrying: a person has to act first.
var NonRetryableProviderErrors = []string{
	domain.ErrTypeCredentialsRevoked, domain.ErrTypeForbidden, domain.ErrTypeNotFound, domain.ErrTypeEndpointGone, domain.ErrTypeInstallationNotFound,
	domain.ErrTypeInstallationRemoved, domain.ErrTypeAlreadyConnected,
}

// BackupHostActivity runs a backup on the worker that holds the repository's mirror (its host
// task queue). A clone of a big repository can take long, so the activity heartbeats progress
// throughout (heartbeatTimeout, default two minutes, notices a dead worker); ScheduleToStart is
// short so a dead host is noticed and another worker takes over (hydrating the mirror from
// storage).
func BackupHostActivity(ctx workflow.Context, hostQueue string, hostTimeout, heartbeatTimeout time.Duration) workflow.Context {
	if hostTimeout <= 0 {
		hostTimeout = 2 * time.Minute
	}
	if heartbeatTimeout <= 0 {
		heartbeatTimeout = 2 * time.Minute
	}
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              hostQueue,
		ScheduleToStartTimeout: hostTimeout,
		StartToCloseTimeout:    6 * time.Hour,
		HeartbeatTimeout:       heartbeatTimeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        10 * time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        10 * time.Minute,
			MaximumAttempts:        5,
			NonRetryableErrorTypes: NonRetryableProviderErrors,
		},
	})
}

// SweepCheckActivity suits one page of a sweep's ls-remote checks: the pace is set by the git
// rate limiter, so the activity may take long but heartbeats after every repository. Retries
// re-check the whole page, which is cheap and harmless.
func SweepCheckActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Hour,
		HeartbeatTimeout:    2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        30 * time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        10 * time.Minute,
			MaximumAttempts:        5,
			NonRetryableErrorTypes: NonRetryableProviderErrors,
		},
	})
}

// TemporalActivity suits short calls to Temporal's own API (schedules): like DatabaseActivity,
// quick with a few fast retries.
func TemporalActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			MaximumAttempts:        10,
			NonRetryableErrorTypes: []string{"InvalidInput", "Misconfigured"},
		},
	})
}

// ExportActivity suits the export step of a backup (pull requests and metadata over the REST
// API). The step bounds its own time and turns Bitbucket failures into an incomplete export,
// so what is left to retry is storage trouble: a few attempts, then the run commits its code
// without the export rather than waiting.
func ExportActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Minute,
		HeartbeatTimeout:    2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        5 * time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			MaximumAttempts:        3,
			NonRetryableErrorTypes: append([]string{domain.ErrTypeSnapshotConflict, domain.ErrTypeInvalidInput}, NonRetryableProviderErrors...),
		},
	})
}

// DrillActivity suits the body of a restore drill: downloading a whole snapshot and running git
// fsck can take long, so it heartbeats between steps; a check that fails is the drill's result,
// not an error, so what is retried is trouble reaching storage, a few times.
func DrillActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 6 * time.Hour,
		HeartbeatTimeout:    5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        10 * time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        5 * time.Minute,
			MaximumAttempts:        3,
			NonRetryableErrorTypes: []string{domain.ErrTypeInvalidInput, domain.ErrTypeMisconfigured, domain.ErrTypeSnapshotMissing},
		},
	})
}

// RestorePushActivity suits hydrating and pushing a whole repository: long, heartbeating, and
// retried (a retried push sends only what the target still lacks).
func RestorePushActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 6 * time.Hour,
		HeartbeatTimeout:    2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    10 * time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    5 * time.Minute,
			MaximumAttempts:    5,
			NonRetryableErrorTypes: append([]string{domain.ErrTypeSnapshotCorrupt, domain.ErrTypeRestoreTargetMissing,
				domain.ErrTypeRestoreGrantMissing, domain.ErrTypeInvalidInput}, NonRetryableProviderErrors...),
		},
	})
}

// RestorePullRequestActivity runs once: opening pull requests is not idempotent (Bitbucket
// has no import), so a retry could open them twice. A failed attempt is reported, not repeated.
func RestorePullRequestActivity(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Minute,
		HeartbeatTimeout:    2 * time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	})
}
