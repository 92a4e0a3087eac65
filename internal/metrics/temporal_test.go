package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/internal/metrics"
	"github.com/gitsec/gitsec/internal/testenv"
)

func greet(_ workflow.Context, name string) (string, error) { return "hello " + name, nil }

// The SDK's own metrics (client requests, worker start, workflow completion) reach the
// registry that GitSec's /metrics serves, under their Prometheus names.
func TestTemporalSDKMetricsReachTheRegistry(t *testing.T) {
	env := testenv.Temporal(t)
	m := metrics.New("test")
	defer m.Close()
	tc, err := client.Dial(client.Options{HostPort: env.HostPort, Namespace: env.Namespace, MetricsHandler: m.TemporalMetricsHandler()})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	w := worker.New(tc, env.TaskQueue, worker.Options{})
	w.RegisterWorkflow(greet)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: env.TaskQueue}, greet, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := run.Get(ctx, &out); err != nil || out != "hello metrics" {
		t.Fatalf("workflow = %q, %v", out, err)
	}

	// sdktally.PrometheusSanitizeOptions replace every character but [a-zA-Z0-9_] in label
	// values too: the task queue test-x-1 is reported as test_x_1.
	completed := map[string]string{"workflow_type": "greet", "task_queue": strings.ReplaceAll(env.TaskQueue, "-", "_")}
	fams := waitFor(t, m, "temporal_workflow_completed_total{workflow_type=greet}", counterAtLeast("temporal_workflow_completed_total", completed, 1))
	if got := counter(sample(t, fams, "temporal_workflow_completed_total", completed)); got != 1 {
		t.Errorf("temporal_workflow_completed_total{workflow_type=greet} = %v, want 1", got)
	}
	waitFor(t, m, "temporal_request_total{operation=StartWorkflowExecution}", counterAtLeast("temporal_request_total", map[string]string{"operation": "StartWorkflowExecution"}, 1))
	waitFor(t, m, "a temporal_request_latency_seconds histogram", hasFamily("temporal_request_latency_seconds", dto.MetricType_HISTOGRAM))
	waitFor(t, m, "temporal_worker_start_total", counterAtLeast("temporal_worker_start_total", nil, 1))
}
