package archive_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/testenv"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{S3: true}))
}

// TestS3Backend runs the backup cycle against a real S3 server (versitygw):
// conditional manifest writes, skipped re-uploads and verified downloads all
// depend on the backend's behaviour, not only on fileblob's.
func TestS3Backend(t *testing.T) {
	f := newFixtureAt(t, testenv.S3(t))
	base := f.src.Commit("main", "a", "1\n")
	f.src.Commit("feature", "b", "b\n")
	f.src.Tag("v1", base)
	first := f.backup(domain.TriggerInitial)
	if !first.Created || first.PacksUploaded != 1 {
		t.Fatalf("initial backup = %+v", first)
	}

	f.src.CommitOn(base, "refs/heads/main", "a", "force-pushed\n")
	fetched := f.fetch()
	// A crashed run stored the pack but not the manifest.
	if _, _, err := f.store.PutPack(context.Background(), f.repo, fetched.NewPacks[0], nil); err != nil {
		t.Fatal(err)
	}
	second := f.snapshot(domain.TriggerWebhook)
	if !second.Created || second.PacksUploaded != 0 || len(second.Manifest.Packs) != 2 {
		t.Fatalf("backup after the crash = %+v", second)
	}

	f.src.Git("update-ref", "-d", "refs/heads/feature")
	third := f.backup(domain.TriggerSchedule)
	if unchanged := f.backup(domain.TriggerSchedule); unchanged.Created || unchanged.BytesUploaded != 0 {
		t.Fatalf("backup of an unchanged repository = %+v", unchanged)
	}

	dup := *third.Manifest
	if _, err := f.store.CommitSnapshot(context.Background(), &dup); !errors.Is(err, archive.ErrSnapshotExists) {
		t.Fatalf("second manifest write on S3: %v, want ErrSnapshotExists", err)
	}
	ids, err := f.store.ListSnapshots(context.Background(), f.repo)
	if err != nil || len(ids) != 3 || ids[0] != third.Manifest.ID {
		t.Fatalf("snapshots = %v, %v", ids, err)
	}
	f.restoreAndCheck(first.Manifest.ID)
	f.restoreAndCheck("latest")
	checkBundleChain(t, f, third.Manifest.ID, 2)
}
