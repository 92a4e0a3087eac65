// Package config reads GitSec's settings from GITSEC_* environment variables. Every variable the
// code reads is declared in Variables, and a test checks that README.md documents each one.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Variable describes one environment variable. Secret values are never echoed in errors.
type Variable struct {
	Name    string
	Default string
	Secret  bool
	Help    string
}

// Variables lists every environment variable GitSec reads, in README order.
var Variables = []Variable{
	{Name: "GITSEC_DATABASE_URL", Secret: true, Help: "Postgres connection URL (postgres://user:pass@host:5432/db?sslmode=...). Required."},
	{Name: "GITSEC_TEMPORAL_ADDRESS", Default: "127.0.0.1:7233", Help: "Temporal frontend host:port."},
	{Name: "GITSEC_TEMPORAL_NAMESPACE", Default: "default", Help: "Temporal namespace."},
	{Name: "GITSEC_TASK_QUEUE", Default: "gitsec", Help: "Shared Temporal task queue polled by every worker."},
	{Name: "GITSEC_STORAGE_URL", Default: "file://.gitsec/storage", Help: "Backup storage as a gocloud.dev/blob URL: file://DIR, s3://BUCKET?region=..., gs://BUCKET, azblob://CONTAINER."},
	{Name: "GITSEC_HTTP_ADDR", Default: "127.0.0.1:8080", Help: "Listen address of `gitsec api`."},
	{Name: "GITSEC_METRICS_ADDR", Help: "Listen address (host:port) where `gitsec worker` serves Prometheus metrics at /metrics; unset: the worker serves none. `gitsec api` serves /metrics on GITSEC_HTTP_ADDR, and `gitsec dev` serves the metrics of its API and worker there too."},
	{Name: "GITSEC_PUBLIC_URL", Default: "http://127.0.0.1:8080", Help: "Externally reachable base URL of the API (OAuth callback and webhook URLs are built from it)."},
	{Name: "GITSEC_SECRETS_KEY_URL", Secret: true, Help: "gocloud.dev/secrets keeper URL that encrypts OAuth tokens and webhook secrets at rest (base64key://... locally; awskms://, gcpkms://, hashivault:// in production). Required by api, worker and dev."},
	{Name: "GITSEC_LOG_LEVEL", Default: "info", Help: "debug, info, warn or error."},
	{Name: "GITSEC_LOG_FORMAT", Default: "text", Help: "text or json."},
	{Name: "GITSEC_BITBUCKET_API_URL", Default: "https://api.bitbucket.org", Help: "Bitbucket REST API base URL (the emulator's in `make dev`)."},
	{Name: "GITSEC_BITBUCKET_OAUTH_URL", Default: "https://bitbucket.org/site/oauth2", Help: "Bitbucket OAuth 2.0 base URL (authorize and access_token live under it)."},
	{Name: "GITSEC_BITBUCKET_GIT_URL", Default: "https://bitbucket.org", Help: "Base URL that repositories are cloned from over HTTPS."},
	{Name: "GITSEC_BITBUCKET_CLIENT_ID", Help: "OAuth consumer key of the read-only backup app. When set, `make dev` talks to real Bitbucket instead of the emulator."},
	{Name: "GITSEC_BITBUCKET_CLIENT_SECRET", Secret: true, Help: "OAuth consumer secret of the backup app."},
	{Name: "GITSEC_BITBUCKET_RESTORE_CLIENT_ID", Help: "OAuth consumer key of the Restore App (scopes repository:write, repository:admin, pullrequest:write), installed per installation only to restore; unset: restores into Bitbucket are off (downloads and the offline CLI still work). `make dev` registers one in the emulator."},
	{Name: "GITSEC_BITBUCKET_RESTORE_CLIENT_SECRET", Secret: true, Help: "OAuth consumer secret of the Restore App."},
	{Name: "GITSEC_RESTORE_DIR", Default: "restores", Help: "Scratch directory where a worker hydrates the snapshot it restores (removed after each restore; needs the repository's size free)."},
	{Name: "GITSEC_BITBUCKET_REST_PER_HOUR", Default: "1000", Help: "REST requests per hour per connected account (Bitbucket's documented limit); shared by all goroutines of a process."},
	{Name: "GITSEC_BITBUCKET_GIT_PER_HOUR", Default: "60000", Help: "git-over-HTTPS operations per hour per connected account."},
	{Name: "GITSEC_MIRROR_DIR", Default: "mirrors", Help: "Where a worker keeps its bare git mirrors (a cache: lost mirrors are rebuilt from storage)."},
	{Name: "GITSEC_WORKER_HOST_QUEUE", Help: "This worker's own task queue for mirror affinity; default gitsec-host-HOSTNAME. Keep it stable across restarts of a worker with the same disk."},
	{Name: "GITSEC_MAX_CONCURRENT_BACKUPS", Default: "4", Help: "Backups (clones and fetches) one worker runs at once."},
	{Name: "GITSEC_MIRROR_MAX_BYTES", Default: "0", Help: "Disk budget of one worker's mirrors in bytes (0: unlimited). Before a clone or fetch the worker evicts the least recently used mirrors of other repositories (rebuilt from storage when next needed); a repository larger than the whole budget fails its backup."},
	{Name: "GITSEC_MIRROR_CLEANUP_INTERVAL", Default: "1h", Help: "How often each worker deletes the mirrors of repositories no longer backed up (excluded, deleted upstream or uninstalled)."},
	{Name: "GITSEC_BACKUP_QUIET_PERIOD", Default: "5s", Help: "After a backup request, wait this long for more before starting (a push burst becomes one backup)."},
	{Name: "GITSEC_BACKUP_HOST_TIMEOUT", Default: "2m", Help: "How long a backup waits for the worker that keeps the repository's mirror before another worker takes over (and rebuilds the mirror from storage)."},
	{Name: "GITSEC_BACKUP_MAX_WAIT", Default: "1m", Help: "Longest a backup request waits for the quiet period."},
	{Name: "GITSEC_DRILL_EVERY", Default: "168h", Help: "How often each installation's restore drill schedule restores the latest snapshot of every included repository into a scratch repository on a worker and checks it (refs, git fsck --strict, exports); Go duration, applied when onboarding or a re-sync runs."},
	{Name: "GITSEC_RETENTION_EVERY", Default: "24h", Help: "How often each installation's retention schedule applies the retention policies of its repositories and deletes what no snapshot needs any more (Go duration; applied when onboarding or a re-sync runs)."},
	{Name: "GITSEC_RETENTION_GRACE", Default: "6h", Help: "How long a pack or export object must have stayed unreferenced, across retention runs, before it is deleted (Go duration; 0s deletes at once and relies on the storage leases alone)."},
	{Name: "GITSEC_CONSOLIDATE_MAX_PACKS", Default: "50", Help: "A backup whose snapshot would list more packs than this writes one fresh full pack instead, so that restores stay short (0: never by count)."},
	{Name: "GITSEC_CONSOLIDATE_MAX_INCREMENTAL_BYTES", Default: "0", Help: "A backup whose incremental packs (all but the first of the chain) would add up to more bytes than this consolidates too (0: never by size)."},
	{Name: "GITSEC_SWEEP_INTERVAL", Default: "24h", Help: "How often each installation's sweep schedule checks every included repository with ls-remote and backs up the changed ones (Go duration; applied when onboarding or a re-sync runs)."},
	{Name: "GITSEC_SWEEP_CONCURRENCY", Default: "8", Help: "ls-remote checks one sweep runs at once (the account's git rate limit paces them further)."},
	{Name: "GITSEC_EXPORT_FULL_EVERY", Default: "24", Help: "Every Nth pull request export re-lists every pull request (a reconciliation that reports drift and PRs deleted upstream); the others list only PRs updated since the previous export."},
	{Name: "GITSEC_EXPORT_OVERLAP", Default: "2m", Help: "How far before the previous export's high-water mark an incremental export lists updated pull requests (Go duration)."},
	{Name: "GITSEC_EXPORT_MAX_DURATION", Default: "10m", Help: "Longest one export step runs; what rate limits leave unfetched is marked incomplete in the snapshot and fetched by the next run (Go duration)."},
	{Name: "GITSEC_EXPORT_CATCH_UP_DELAY", Default: "2m", Help: "How soon a repository's backup runs again by itself after an incomplete export, to catch up (at most 30 times in a row; Go duration)."},
	{Name: "GITSEC_HOUSEKEEPING_INTERVAL", Default: "1h", Help: "How often the Housekeeping schedule runs (Go duration)."},
	{Name: "GITSEC_WEBHOOK_DEDUP_WINDOW", Default: "72h", Help: "How long webhook delivery IDs are kept for de-duplication (Go duration)."},
}

// Config is the validated configuration shared by every subcommand.
type Config struct {
	DatabaseURL          string
	TemporalAddress      string
	TemporalNamespace    string
	TaskQueue            string
	StorageURL           string
	HTTPAddr             string
	MetricsAddr          string
	PublicURL            string
	SecretsKeyURL        string
	LogLevel             slog.Level
	LogFormat            string
	Bitbucket            Bitbucket
	MirrorDir            string
	RestoreDir           string
	HostQueue            string
	MaxConcurrentBackups int
	MirrorMaxBytes       int64
	MirrorCleanupEvery   time.Duration
	BackupQuietPeriod    time.Duration
	BackupMaxWait        time.Duration
	BackupHostTimeout    time.Duration
	SweepEvery           time.Duration
	SweepConcurrency     int
	HousekeepingEvery    time.Duration
	WebhookDedupWindow   time.Duration
	ExportFullEvery      int
	ExportOverlap        time.Duration
	ExportMaxDuration    time.Duration
	ExportCatchUpDelay   time.Duration
	DrillEvery           time.Duration
	RetentionEvery       time.Duration
	RetentionGrace       time.Duration
	ConsolidateMaxPacks  int
	ConsolidateMaxBytes  int64
}

// Bitbucket holds the Bitbucket Cloud endpoints and the backup app's OAuth consumer.
type Bitbucket struct {
	APIURL       string
	OAuthURL     string
	GitURL       string
	ClientID     string
	ClientSecret string
	// RestoreClientID and RestoreClientSecret are the Restore App's consumer ("": none).
	RestoreClientID     string
	RestoreClientSecret string
	RESTPerHour         int
	GitPerHour          int
}

// Getenv is the lookup function Load uses; tests pass a map-backed one.
type Getenv func(string) (string, bool)

// Load reads and validates the configuration from the process environment.
func Load() (Config, error) { return LoadFrom(os.LookupEnv) }

// LoadFrom reads and validates the configuration. All problems are reported together, each
// naming its variable, so that one failed start tells the operator everything to fix.
func LoadFrom(getenv Getenv) (Config, error) {
	r := reader{getenv: getenv}
	c := Config{
		DatabaseURL:       r.databaseURL("GITSEC_DATABASE_URL"),
		TemporalAddress:   r.hostPort("GITSEC_TEMPORAL_ADDRESS"),
		TemporalNamespace: r.nonEmpty("GITSEC_TEMPORAL_NAMESPACE"),
		TaskQueue:         r.nonEmpty("GITSEC_TASK_QUEUE"),
		StorageURL:        r.storageURL("GITSEC_STORAGE_URL"),
		HTTPAddr:          r.hostPort("GITSEC_HTTP_ADDR"),
		MetricsAddr:       r.optionalHostPort("GITSEC_METRICS_ADDR"),
		PublicURL:         r.httpURL("GITSEC_PUBLIC_URL"),
		SecretsKeyURL:     r.secretsURL("GITSEC_SECRETS_KEY_URL"),
		LogLevel:          r.logLevel("GITSEC_LOG_LEVEL"),
		LogFormat:         r.oneOf("GITSEC_LOG_FORMAT", "text", "json"),
		Bitbucket: Bitbucket{
			APIURL:              r.httpURL("GITSEC_BITBUCKET_API_URL"),
			OAuthURL:            r.httpURL("GITSEC_BITBUCKET_OAUTH_URL"),
			GitURL:              r.httpURL("GITSEC_BITBUCKET_GIT_URL"),
			ClientID:            r.optional("GITSEC_BITBUCKET_CLIENT_ID"),
			ClientSecret:        r.optional("GITSEC_BITBUCKET_CLIENT_SECRET"),
			RestoreClientID:     r.optional("GITSEC_BITBUCKET_RESTORE_CLIENT_ID"),
			RestoreClientSecret: r.optional("GITSEC_BITBUCKET_RESTORE_CLIENT_SECRET"),
			RESTPerHour:         r.positiveInt("GITSEC_BITBUCKET_REST_PER_HOUR"),
			GitPerHour:          r.positiveInt("GITSEC_BITBUCKET_GIT_PER_HOUR"),
		},
		MirrorDir:            r.nonEmpty("GITSEC_MIRROR_DIR"),
		RestoreDir:           r.nonEmpty("GITSEC_RESTORE_DIR"),
		HostQueue:            r.optional("GITSEC_WORKER_HOST_QUEUE"),
		MaxConcurrentBackups: r.positiveInt("GITSEC_MAX_CONCURRENT_BACKUPS"),
		MirrorMaxBytes:       r.nonNegativeInt64("GITSEC_MIRROR_MAX_BYTES"),
		MirrorCleanupEvery:   r.duration("GITSEC_MIRROR_CLEANUP_INTERVAL"),
		BackupQuietPeriod:    r.duration("GITSEC_BACKUP_QUIET_PERIOD"),
		BackupMaxWait:        r.duration("GITSEC_BACKUP_MAX_WAIT"),
		BackupHostTimeout:    r.duration("GITSEC_BACKUP_HOST_TIMEOUT"),
		SweepEvery:           r.duration("GITSEC_SWEEP_INTERVAL"),
		SweepConcurrency:     r.positiveInt("GITSEC_SWEEP_CONCURRENCY"),
		HousekeepingEvery:    r.duration("GITSEC_HOUSEKEEPING_INTERVAL"),
		WebhookDedupWindow:   r.duration("GITSEC_WEBHOOK_DEDUP_WINDOW"),
		ExportFullEvery:      r.positiveInt("GITSEC_EXPORT_FULL_EVERY"),
		ExportOverlap:        r.duration("GITSEC_EXPORT_OVERLAP"),
		ExportMaxDuration:    r.duration("GITSEC_EXPORT_MAX_DURATION"),
		ExportCatchUpDelay:   r.duration("GITSEC_EXPORT_CATCH_UP_DELAY"),
		DrillEvery:           r.duration("GITSEC_DRILL_EVERY"),
		RetentionEvery:       r.duration("GITSEC_RETENTION_EVERY"),
		RetentionGrace:       r.nonNegativeDuration("GITSEC_RETENTION_GRACE"),
		ConsolidateMaxPacks:  int(r.nonNegativeInt64("GITSEC_CONSOLIDATE_MAX_PACKS")),
		ConsolidateMaxBytes:  r.nonNegativeInt64("GITSEC_CONSOLIDATE_MAX_INCREMENTAL_BYTES"),
	}
	if err := errors.Join(r.errs...); err != nil {
		return Config{}, err
	}
	if c.HostQueue == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
		c.HostQueue = "gitsec-host-" + host
	}
	return c, nil
}

// RequireSecretsKey fails when GITSEC_SECRETS_KEY_URL is unset.
func (c Config) RequireSecretsKey() error {
	if c.SecretsKeyURL == "" {
		return errors.New("GITSEC_SECRETS_KEY_URL: is required but not set (generate one with `gitsec admin new-secrets-key`)")
	}
	return nil
}

type reader struct {
	getenv Getenv
	errs   []error
}

func lookupVariable(name string) Variable {
	for _, v := range Variables {
		if v.Name == name {
			return v
		}
	}
	panic("config: variable " + name + " is read but not declared in config.Variables")
}

// raw returns the value or the declared default; required variables have no default.
func (r *reader) raw(name string) (string, Variable) {
	v := lookupVariable(name)
	if val, ok := r.getenv(name); ok && strings.TrimSpace(val) != "" {
		return strings.TrimSpace(val), v
	}
	return v.Default, v
}

func (r *reader) fail(name, problem string) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", name, problem))
}

func (r *reader) optional(name string) string {
	val, _ := r.raw(name)
	return val
}

func (r *reader) nonEmpty(name string) string {
	val, _ := r.raw(name)
	if val == "" {
		r.fail(name, "is required but not set")
	}
	return val
}

func (r *reader) databaseURL(name string) string {
	val := r.nonEmpty(name)
	if val == "" {
		return ""
	}
	u, err := url.Parse(val)
	if err != nil {
		// url.Parse errors quote the input, which may hold a password.
		r.fail(name, "is not a valid URL")
		return ""
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		r.fail(name, fmt.Sprintf("must be a postgres:// URL, got scheme %q", u.Scheme))
	}
	return val
}

func (r *reader) hostPort(name string) string {
	val := r.nonEmpty(name)
	if val == "" {
		return ""
	}
	return r.checkHostPort(name, val)
}

// optionalHostPort is hostPort for a listener that is off when the variable is unset.
func (r *reader) optionalHostPort(name string) string {
	val := r.optional(name)
	if val == "" {
		return ""
	}
	return r.checkHostPort(name, val)
}

func (r *reader) checkHostPort(name, val string) string {
	host, port, err := net.SplitHostPort(val)
	if err != nil {
		r.fail(name, fmt.Sprintf("must be host:port, got %q", val))
		return val
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		r.fail(name, fmt.Sprintf("port %q is not a number between 0 and 65535", port))
	}
	_ = host
	return val
}

func (r *reader) httpURL(name string) string {
	val := r.nonEmpty(name)
	if val == "" {
		return ""
	}
	u, err := url.Parse(val)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.fail(name, fmt.Sprintf("must be an absolute http(s) URL, got %q", val))
		return val
	}
	return strings.TrimRight(val, "/")
}

func (r *reader) storageURL(name string) string {
	val := r.nonEmpty(name)
	if val == "" {
		return ""
	}
	norm, err := NormalizeStorageURL(val)
	if err != nil {
		r.fail(name, err.Error())
		return val
	}
	return norm
}

// NormalizeStorageURL checks a gocloud.dev/blob URL and turns a relative file URL such as
// file://.gitsec/storage (which gocloud would read as host ".gitsec") into an absolute one that
// creates its directory on first use. Every command that takes a storage URL goes through it.
func NormalizeStorageURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("is not a valid URL: %q", raw)
	}
	switch u.Scheme {
	case "s3", "gs", "azblob":
		if u.Host == "" {
			return "", fmt.Errorf("%q names no bucket", raw)
		}
		return raw, nil
	case "file":
	default:
		return "", fmt.Errorf("scheme %q is not supported (use file://, s3://, gs:// or azblob://)", u.Scheme)
	}
	p := u.Path
	if u.Host != "" {
		p = u.Host + u.Path // file://relative/dir
	}
	if p == "" {
		return "", fmt.Errorf("%q names no directory", raw)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %q: %v", p, err)
	}
	q := u.Query()
	if q.Get("create_dir") == "" {
		q.Set("create_dir", "true")
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}).String(), nil
}

// secretsURL is optional at load time: only the processes that touch credentials (api, worker,
// dev) need it, and they call RequireSecretsKey.
func (r *reader) secretsURL(name string) string {
	val, _ := r.raw(name)
	if val == "" {
		return ""
	}
	scheme, _, ok := strings.Cut(val, "://")
	if !ok {
		r.fail(name, "must be a secrets keeper URL such as base64key://KEY")
		return ""
	}
	switch scheme {
	case "base64key", "stringkey", "awskms", "gcpkms", "azurekeyvault", "hashivault":
	default:
		r.fail(name, fmt.Sprintf("keeper scheme %q is not supported", scheme))
	}
	return val
}

func (r *reader) logLevel(name string) slog.Level {
	val, _ := r.raw(name)
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(val)); err != nil {
		r.fail(name, fmt.Sprintf("must be debug, info, warn or error, got %q", val))
	}
	return lvl
}

func (r *reader) oneOf(name string, allowed ...string) string {
	val, _ := r.raw(name)
	for _, a := range allowed {
		if val == a {
			return val
		}
	}
	r.fail(name, fmt.Sprintf("must be one of %s, got %q", strings.Join(allowed, ", "), val))
	return val
}

func (r *reader) positiveInt(name string) int {
	val, _ := r.raw(name)
	n, err := strconv.Atoi(val)
	if err != nil || n <= 0 {
		r.fail(name, fmt.Sprintf("must be a positive integer, got %q", val))
	}
	return n
}

func (r *reader) nonNegativeInt64(name string) int64 {
	val, _ := r.raw(name)
	n, err := strconv.ParseInt(val, 10, 64)
	if err != nil || n < 0 {
		r.fail(name, fmt.Sprintf("must be a whole number of bytes, 0 or more, got %q", val))
	}
	return n
}

func (r *reader) nonNegativeDuration(name string) time.Duration {
	val, _ := r.raw(name)
	d, err := time.ParseDuration(val)
	if err != nil || d < 0 {
		r.fail(name, fmt.Sprintf("must be a duration such as 0s, 30m or 24h, got %q", val))
	}
	return d
}

func (r *reader) duration(name string) time.Duration {
	val, _ := r.raw(name)
	d, err := time.ParseDuration(val)
	if err != nil || d <= 0 {
		r.fail(name, fmt.Sprintf("must be a positive duration such as 30m or 24h, got %q", val))
	}
	return d
}
