package worker

import (
	"context"
	"fmt"
	"os"

	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
)

// ReplayExecution replays a recorded workflow execution against the current workflow code. A
// non-determinism error means the code changed in a way that would break executions in flight.
func ReplayExecution(ctx context.Context, c client.Client, workflowID, runID string) error {
	hist := &historypb.History{}
	it := c.GetWorkflowHistory(ctx, workflowID, runID, false, 0)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return fmt.Errorf("read history of %s: %w", workflowID, err)
		}
		hist.Events = append(hist.Events, ev)
	}
	if err := NewReplayer().ReplayWorkflowHistory(nil, hist); err != nil {
		return fmt.Errorf("replay %s/%s: %w", workflowID, runID, err)
	}
	return nil
}

// NewReplayer returns a replayer with every workflow registered exactly as a worker registers
// them, so a replayed history meets the code and names a deploy would run.
func NewReplayer() sdkworker.WorkflowReplayer {
	r := sdkworker.NewWorkflowReplayer()
	registerWorkflows(r)
	return r
}

// ReplayHistoryFile replays a history saved with `temporal workflow show --output json`.
func ReplayHistoryFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open history: %w", err)
	}
	defer f.Close()
	hist, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	if err != nil {
		return fmt.Errorf("decode history %s: %w", path, err)
	}
	if err := NewReplayer().ReplayWorkflowHistory(nil, hist); err != nil {
		return fmt.Errorf("replay %s: %w", path, err)
	}
	return nil
}

// ReplayTaskQueue replays every execution that ran on a task queue (as listed by visibility)
// and returns how many it replayed. Tests run it after real executions; operators can run it
// against a staging namespace before deploying new workflow code.
func ReplayTaskQueue(ctx context.Context, c client.Client, taskQueue string) (int, error) {
	var next []byte
	n := 0
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("TaskQueue = %q", taskQueue), NextPageToken: next,
		})
		if err != nil {
			return n, fmt.Errorf("list executions on %s: %w", taskQueue, err)
		}
		for _, ex := range resp.Executions {
			if err := ReplayExecution(ctx, c, ex.Execution.WorkflowId, ex.Execution.RunId); err != nil {
				return n, err
			}
			n++
		}
		if next = resp.NextPageToken; len(next) == 0 {
			return n, nil
		}
	}
}
