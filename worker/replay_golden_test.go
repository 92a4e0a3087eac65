package worker

import (
	"path/filepath"
	"testing"
)

// BackupRepository executions recorded before its run was split into StageBackup and
// CommitSnapshot (one RunBackup activity per run, no version marker) must still replay: the
// split is guarded with workflow.GetVersion.
func TestBackupHistoriesFromBeforeTheStageCommitSplitReplay(t *testing.T) {
	for _, name := range []string{"backup_repository_v0_snapshot.json", "backup_repository_v0_unchanged.json"} {
		if err := ReplayHistoryFile(filepath.Join("..", "workflows", "testdata", name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
