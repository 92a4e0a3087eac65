// Package domain is GitSec's shared vocabulary: the statuses, trigger kinds and error type names
// that the store, the workflows, the archive, the activities and the API all speak. The values
// are stored in Postgres, written into manifests and carried in Temporal payloads, so they never
// change once released. The package imports nothing, so workflow code may use it.
package domain

// Installation statuses (installations.status). See docs/operations.md for the life cycle.
const (
	InstallationPending       = "pending"
	InstallationOnboarding    = "onboarding"
	InstallationActive        = "active"
	InstallationActivePartial = "active_partial"
	InstallationNoWorkspace   = "no_workspace"
	InstallationNeedsReauth   = "needs_reauth"
	InstallationRemoving      = "removing"
	InstallationRemoved       = "removed"
	InstallationFailed        = "failed"
)

// Workspace statuses (workspaces.status): the outcome of webhook registration.
const (
	WorkspaceWebhookRegistered = "webhook_registered"
	WorkspaceNoAdmin           = "no_admin"
	WorkspaceWebhookFailed     = "webhook_failed"
	WorkspaceGone              = "gone"
)

// Repository statuses (repositories.status).
const (
	RepositoryActive          = "active"
	RepositoryDeletedUpstream = "deleted_upstream"
)

// Backup states of a repository (repositories.last_backup_status).
const (
	BackupNever     = "never"
	BackupPending   = "pending_backup"
	BackupSucceeded = "succeeded"
	BackupUnchanged = "unchanged"
	BackupFailed    = "failed"
)

// TriggerKind says why a backup ran: the manifest's trigger.kind, the snapshot row's trigger and
// the backup request's reason.
type TriggerKind string

// The trigger kinds of manifest format version 1.
const (
	TriggerInitial      TriggerKind = "initial"
	TriggerSchedule     TriggerKind = "schedule"
	TriggerWebhook      TriggerKind = "webhook"
	TriggerManual       TriggerKind = "manual"
	TriggerRestoreDrill TriggerKind = "restore-drill"
)

// Valid reports whether k is one of the known kinds.
func (k TriggerKind) Valid() bool {
	switch k {
	case TriggerInitial, TriggerSchedule, TriggerWebhook, TriggerManual, TriggerRestoreDrill:
		return true
	}
	return false
}

// Stable error type names of the non-retryable failures activities and workflows raise
// (temporal.NewNonRetryableApplicationError); workflows branch on them.
const (
	ErrTypeCredentialsRevoked   = "CredentialsRevoked"
	ErrTypeForbidden            = "Forbidden"
	ErrTypeNotFound             = "NotFound"
	ErrTypeEndpointGone         = "EndpointGone"
	ErrTypeInstallationNotFound = "InstallationNotFound"
	// ErrTypeInstallationRemoved: the installation was uninstalled (possibly by another worker)
	// while the activity ran; nothing more is done for it.
	ErrTypeInstallationRemoved = "InstallationRemoved"
	// ErrTypeAlreadyConnected: another live installation of the tenant is the same account.
	ErrTypeAlreadyConnected = "AlreadyConnected"
	// ErrTypeSnapshotConflict: a staged snapshot no longer follows the latest one (committing
	// it would fork the history); the next run stages afresh.
	ErrTypeSnapshotConflict = "SnapshotConflict"
	// ErrTypeSnapshotMissing: a snapshot to commit is neither staged nor committed.
	ErrTypeSnapshotMissing = "SnapshotMissing"
	// ErrTypeBackupTargetMismatch: a BackupRepository execution refused a request meant for
	// another repository row (a workflow ID was derived wrongly somewhere).
	ErrTypeBackupTargetMismatch = "BackupTargetMismatch"
	// ErrTypeMirrorTooLarge: the repository alone needs more than GITSEC_MIRROR_MAX_BYTES;
	// retrying cannot help until an operator raises the limit.
	ErrTypeMirrorTooLarge = "MirrorTooLarge"
	// ErrTypeMirrorDiskBusy: the mirror disk budget is taken by mirrors in use right now; a
	// retry later finds them released (and evictable).
	ErrTypeMirrorDiskBusy = "MirrorDiskBusy"
	// ErrTypeInvalidInput: an activity input that cannot be parsed (a bug upstream).
	ErrTypeInvalidInput = "InvalidInput"
	// ErrTypeMisconfigured: the worker lacks a setting the activity needs.
	ErrTypeMisconfigured = "Misconfigured"
)

// Webhook delivery results: what the receiver answered (the metrics' result label), and for a
// stored delivery what its processing did (webhook_deliveries.result).
const (
	// WebhookAccepted: stored and handed to the dispatcher (2xx).
	WebhookAccepted = "accepted"
	// WebhookDuplicate: a redelivery of a stored request UUID; acknowledged, nothing done.
	WebhookDuplicate = "duplicate"
	// WebhookRejectedSignature: missing or wrong X-Hub-Signature, or no secret for that hook (401).
	WebhookRejectedSignature = "rejected_signature"
	// WebhookUnknownInstallation: no live installation has that ID (404).
	WebhookUnknownInstallation = "unknown_installation"
	// WebhookMalformed: signed, but not a payload GitSec can act on (400).
	WebhookMalformed = "malformed"
	// WebhookTooLarge: the body passed the receiver's bound (413).
	WebhookTooLarge = "too_large"
	// WebhookUnavailable: Postgres could not store it (503: Bitbucket retries).
	WebhookUnavailable = "unavailable"
)

// What processing a stored delivery did (webhook_deliveries.result).
const (
	WebhookBackupRequested = "backup_requested"
	// WebhookCoalesced: a backup request sent after this delivery arrived already covers it.
	WebhookCoalesced       = "coalesced"
	WebhookRepositoryAdded = "repository_added"
	WebhookRenamed         = "renamed"
	// WebhookProjectChanged: the repository kept its name and moved to another project.
	WebhookProjectChanged = "project_changed"
	WebhookMoved          = "moved"
	WebhookMarkedDeleted  = "marked_deleted_upstream"
	WebhookRecorded       = "recorded"
	WebhookIgnored        = "ignored"
)

// Restore drill statuses (restore_drills.status): a drill restores a snapshot into a scratch
// repository on a worker and checks it; nothing is written to Bitbucket.
const (
	DrillRunning = "running"
	DrillPassed  = "passed"
	DrillFailed  = "failed"
)

// The steps of a restore drill, in the order they run, and what each step ended as.
const (
	DrillStepRestore      = "restore"       // download and verify every pack, write the bare repository
	DrillStepRefs         = "refs"          // git for-each-ref equals the manifest's refs and HEAD
	DrillStepFsck         = "fsck"          // git fsck --strict
	DrillStepPullRequests = "pull_requests" // the pull request export decodes, record by record
	DrillStepMetadata     = "metadata"      // the metadata export decodes

	DrillStepPassed  = "passed"
	DrillStepFailed  = "failed"
	DrillStepSkipped = "skipped"
)

// Alert kinds of GET /api/v1/alerts: conditions a person should look at, active until the
// condition clears.
const (
	// AlertDrillFailed: the latest restore drill of a repository failed (cleared by a drill
	// that passes).
	AlertDrillFailed = "drill_failed"
)

// App says which of GitSec's two Bitbucket apps a grant belongs to: the read-only backup app
// every installation has, or the Restore App, installed only to restore (write access).
type App string

const (
	AppBackup  App = "backup"
	AppRestore App = "restore"
)

// Restore statuses (restores.status).
const (
	RestoreQueued    = "queued"
	RestoreRunning   = "running"
	RestoreOK        = "ok"
	RestorePartial   = "partial"
	RestoreFailed    = "failed"
	RestoreCancelled = "cancelled"
)

// RestoreFinished reports whether a restore status is final.
func RestoreFinished(status string) bool {
	switch status {
	case RestoreOK, RestorePartial, RestoreFailed, RestoreCancelled:
		return true
	}
	return false
}

// Restore target modes and conflict policies (the API's target.mode and target.on_conflict).
const (
	RestoreTargetNew      = "new"
	RestoreTargetExisting = "existing"
	OnConflictFail        = "fail"
	OnConflictForce       = "force"
)

// The steps of a Restore workflow, in order (the progress query's step).
const (
	RestoreStepCheckGrant   = "check_grant"
	RestoreStepCreateTarget = "create_target"
	RestoreStepPush         = "push"
	RestoreStepMetadata     = "metadata"
	RestoreStepPullRequests = "pull_requests"
	RestoreStepVerify       = "verify"
	RestoreStepRecord       = "record"
	RestoreStepDone         = "done"
)

// Error types of restores.
const (
	// ErrTypeRestoreGrantMissing: the installation has no Restore App grant (or it was dropped).
	ErrTypeRestoreGrantMissing = "RestoreGrantMissing"
	// ErrTypeRestoreTargetConflict: mode new, and a repository this restore did not create has
	// the slug.
	ErrTypeRestoreTargetConflict = "RestoreTargetConflict"
	// ErrTypeRestoreTargetMissing: the target repository does not exist (mode existing) or was
	// deleted while the restore ran.
	ErrTypeRestoreTargetMissing = "RestoreTargetMissing"
	// ErrTypeRestoreRefConflict: on_conflict=fail and the push would rewind target refs.
	ErrTypeRestoreRefConflict = "RestoreRefConflict"
	// ErrTypeSnapshotCorrupt: a pack or export of the snapshot fails its checksum.
	ErrTypeSnapshotCorrupt = "SnapshotCorrupt"
)

// Outcomes of a retention run on one repository.
const (
	// RetentionApplied: the policy was applied (snapshots forgotten, unreferenced objects swept).
	RetentionApplied = "applied"
	// RetentionDryRun: what the policy would forget and free was reported; nothing changed.
	RetentionDryRun = "dry_run"
	// RetentionRefused: nothing was done, because a manifest does not verify or the stored
	// policy is invalid (the reason says which).
	RetentionRefused = "refused"
)

// Audit actions of retention and legal holds.
const (
	AuditSnapshotForgotten     = "snapshot.forgotten"
	AuditBackupObjectDeleted   = "backup_object.deleted"
	AuditBackupObjectLocked    = "backup_object.delete_refused"
	AuditLegalHoldSet          = "snapshot.legal_hold_set"
	AuditLegalHoldReleased     = "snapshot.legal_hold_released"
	AuditRetentionPolicyChange = "retention_policy.changed"
)
