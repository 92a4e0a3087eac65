package workflows_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

// Histories of real executions, captured from earlier releases of the workflow code, must keep
// replaying: a worker running new code picks up executions that old code started (ADR 0009).
func TestGoldenHistoriesReplay(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "history", "*", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden histories under testdata/history")
	}
	seen := map[string]bool{}
	for _, f := range files {
		wfType, err := historyWorkflowType(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		seen[wfType] = true
		t.Run(filepath.ToSlash(f), func(t *testing.T) {
			if err := worker.ReplayHistoryFile(f); err != nil {
				t.Fatalf("history of %s no longer replays against the current code (guard the change with workflow.GetVersion): %v", wfType, err)
			}
		})
	}
	// Every workflow type the worker runs needs at least one golden history, or its changes go unchecked.
	want := []string{
		workflows.HousekeepingWorkflowName, workflows.OnboardInstallationWorkflowName,
		workflows.BackupRepositoryWorkflowName, workflows.SweepInstallationWorkflowName,
		workflows.UninstallInstallationWorkflowName, workflows.RestoreWorkflowName,
		workflows.DrillRestoreWorkflowName, workflows.DrillInstallationWorkflowName,
	}
	var missing []string
	for _, w := range want {
		if !seen[w] {
			missing = append(missing, w)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no golden history for %v (capture one: workflows/testdata/history/README.md)", missing)
	}
}

// historyWorkflowType reads the workflow type from the history's first event.
func historyWorkflowType(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var h struct {
		Events []struct {
			Attrs *struct {
				WorkflowType struct {
					Name string `json:"name"`
				} `json:"workflowType"`
			} `json:"workflowExecutionStartedEventAttributes"`
		} `json:"events"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", err
	}
	if len(h.Events) == 0 || h.Events[0].Attrs == nil {
		return "", os.ErrInvalid
	}
	return h.Events[0].Attrs.WorkflowType.Name, nil
}
