package worker

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.temporal.io/sdk/activity"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/gitsec/gitsec/activities"
)

// recordingRegistry notes the names a worker registers instead of registering them; the
// embedded interface is nil, so a registration kind this test does not know about panics.
type recordingRegistry struct {
	sdkworker.Registry
	workflows, activities map[string]bool
	// duplicates are names registered twice on one worker (the SDK refuses them at start).
	duplicates []string
}

func newRecordingRegistry() *recordingRegistry {
	return &recordingRegistry{workflows: map[string]bool{}, activities: map[string]bool{}}
}

func (r *recordingRegistry) RegisterWorkflowWithOptions(_ any, o workflow.RegisterOptions) {
	r.workflows[o.Name] = true
}

func (r *recordingRegistry) RegisterActivityWithOptions(_ any, o activity.RegisterOptions) {
	r.addActivity(o.Name)
}

// RegisterActivity of a struct registers every exported method under its name, as the SDK does.
func (r *recordingRegistry) RegisterActivity(a any) {
	t := reflect.TypeOf(a)
	for i := 0; i < t.NumMethod(); i++ {
		r.addActivity(t.Method(i).Name)
	}
}

func (r *recordingRegistry) addActivity(name string) {
	if r.activities[name] {
		r.duplicates = append(r.duplicates, name)
	}
	r.activities[name] = true
}

// workflowNames reads package workflows' source: the string constants it declares, the activity
// names its workflows execute and the workflow names it declares (constants ending in
// WorkflowName).
func workflowNames(t *testing.T) (called, declaredWorkflows map[string]bool) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "workflows", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	var calls []ast.Expr
	declaredWorkflows = map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, name := range n.Names {
					if i < len(n.Values) {
						if lit, ok := n.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							v, _ := strconv.Unquote(lit.Value)
							consts[name.Name] = v
							if strings.HasSuffix(name.Name, "WorkflowName") {
								declaredWorkflows[v] = true
							}
						}
					}
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "ExecuteActivity" && len(n.Args) >= 2 {
					calls = append(calls, n.Args[1])
				}
			}
			return true
		})
	}
	called = map[string]bool{}
	for _, arg := range calls {
		switch a := arg.(type) {
		case *ast.Ident:
			v, ok := consts[a.Name]
			if !ok {
				t.Errorf("%s: activity name %s is not a string constant of package workflows", fset.Position(a.Pos()), a.Name)
			}
			called[v] = true
		case *ast.BasicLit:
			v, _ := strconv.Unquote(a.Value)
			called[v] = true
		default:
			t.Errorf("%s: activities must be called by a name constant, not %T", fset.Position(arg.Pos()), arg)
		}
	}
	if len(called) == 0 {
		t.Fatal("found no ExecuteActivity calls in package workflows")
	}
	return called, declaredWorkflows
}

// The names the workflows call must be exactly the names the worker registers: a missing one
// fails only at run time (an activity task nobody polls for), an extra one is dead code.
func TestWorkflowsCallExactlyTheRegisteredNames(t *testing.T) {
	called, declared := workflowNames(t)
	reg := newRecordingRegistry()
	Register(reg, Activities{
		Onboarding:   &activities.Onboarding{},
		Backups:      &activities.Backups{},
		Sweeps:       &activities.Sweeps{},
		Housekeeping: &activities.Housekeeping{},
		Uninstall:    &activities.Uninstall{},
		Exports:      &activities.Exports{},
		Drills:       &activities.Drills{},
		Restores:     &activities.Restores{},
		Retention:    &activities.Retention{},
	})
	// The host worker is a worker of its own: it may register names the shared one has too.
	host := newRecordingRegistry()
	RegisterHost(host, &activities.Backups{})
	for _, r := range []*recordingRegistry{reg, host} {
		if len(r.duplicates) > 0 {
			t.Errorf("activity names registered twice on one worker: %v", r.duplicates)
		}
	}
	for name := range host.activities {
		reg.activities[name] = true
	}
	if d := diff(called, reg.activities); d != "" {
		t.Errorf("activities called by workflows vs registered by the worker:\n%s", d)
	}
	if d := diff(declared, reg.workflows); d != "" {
		t.Errorf("workflow names declared vs registered:\n%s", d)
	}
}

func diff(want, got map[string]bool) string {
	var out []string
	for k := range want {
		if !got[k] {
			out = append(out, "  not registered: "+k)
		}
	}
	for k := range got {
		if !want[k] {
			out = append(out, "  registered but never called: "+k)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
