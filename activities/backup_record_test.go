package activities_test

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/workflows"
)

// storedObjects maps every object under a file:// bucket directory (not fileblob's .attrs
// sidecars) to its size.
func storedObjects(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	files := map[string]int64{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".attrs") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// sqlConn is a direct connection to the test database, for what the store deliberately cannot
// do (lose rows, read raw columns); it is closed when the test ends.
func (e *backupEnv) sqlConn() *pgx.Conn {
	e.t.Helper()
	conn, err := pgx.Connect(context.Background(), e.dbURL)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// loseSnapshotRows deletes the repository's snapshot rows and its last_snapshot_id, as when the
// record step failed for good after the manifest was committed.
func (e *backupEnv) loseSnapshotRows(slug string) {
	e.t.Helper()
	ctx := context.Background()
	conn := e.sqlConn()
	id := e.repos[slug].ID
	if _, err := conn.Exec(ctx, `DELETE FROM snapshots WHERE repository_id = $1`, id); err != nil {
		e.t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE repositories SET last_snapshot_id = NULL, last_backup_status = 'never', last_backup_at = NULL
		WHERE id = $1`, id); err != nil {
		e.t.Fatal(err)
	}
}

// A committed snapshot whose row never made it to Postgres is recorded by the next run, from
// its manifest and with its own ID, although upstream has not changed since; nothing is
// written to storage for it.
func TestBackupRecordsACommittedSnapshotWhoseRowWasLost(t *testing.T) {
	dir := t.TempDir()
	e := newBackupEnv(t, "file://"+dir+"?create_dir=true")
	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	e.emuJSON("POST", "/_emulator/repositories/acme/api/push", `{"commits":1}`, nil)
	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerWebhook, DeliveryID: "d-7"})
	want := e.snapshots("api")
	if len(want) != 2 {
		t.Fatalf("snapshots = %+v, want two", want)
	}
	stored := storedObjects(t, dir)

	e.loseSnapshotRows("api")
	if r := e.repo("api"); r.LastSnapshotID != nil || len(e.snapshots("api")) != 0 {
		t.Fatalf("rows not lost: %+v", r)
	}
	e.backup("api", workflows.BackupRequest{Trigger: domain.TriggerSchedule})

	got := e.snapshots("api")
	if len(got) != 2 {
		t.Fatalf("snapshots after the run = %+v, want both committed snapshots back", got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.ManifestKey != w.ManifestKey || g.Trigger != w.Trigger || g.RefsCount != w.RefsCount ||
			g.PacksCount != w.PacksCount || g.TotalBytes != w.TotalBytes || (g.ParentID == nil) != (w.ParentID == nil) ||
			(g.ParentID != nil && *g.ParentID != *w.ParentID) {
			t.Fatalf("recovered row %+v, want %+v", g, w)
		}
	}
	r := e.repo("api")
	if r.LastSnapshotID == nil || *r.LastSnapshotID != want[0].ID || r.LastBackupStatus != "succeeded" {
		t.Fatalf("repository after the run = %+v, want last snapshot %s", r, want[0].ID)
	}
	after := storedObjects(t, dir)
	if len(after) != len(stored) {
		t.Fatalf("the run wrote to storage: %d objects before, %d after", len(stored), len(after))
	}
	for key, size := range stored {
		if after[key] != size {
			t.Fatalf("storage changed at %s: %d bytes, then %d", key, size, after[key])
		}
	}

	// Recorded once, the repository is up to date: the next unchanged run changes nothing.
	e.backup("api")
	if n := len(e.snapshots("api")); n != 2 {
		t.Fatalf("snapshots after an unchanged run = %d, want 2", n)
	}
}
