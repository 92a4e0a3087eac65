package workflows

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Workflow code must be deterministic and replayable, so it must not reach databases, the
// network, git or object storage directly; activities do that.
func TestWorkflowsImportNoIOPackages(t *testing.T) {
	forbidden := []string{"github.com/jackc/pgx", "net/http", "github.com/go-git/go-git", "gocloud.dev", "os/exec", "database/sql"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range ast.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %s: move that I/O into an activity", f, path)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no workflow files found")
	}
}
