package domain

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// Workflow code imports this package, so it must stay free of dependencies (and of I/O).
func TestDomainImportsNothing(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range ast.Imports {
			t.Errorf("%s imports %s: the domain vocabulary must not depend on anything", f, imp.Path.Value)
		}
	}
}

func TestTriggerKindValid(t *testing.T) {
	for _, k := range []TriggerKind{TriggerInitial, TriggerSchedule, TriggerWebhook, TriggerManual, TriggerRestoreDrill} {
		if !k.Valid() {
			t.Errorf("%q is not valid", k)
		}
	}
	for _, k := range []TriggerKind{"", "Manual", "push"} {
		if k.Valid() {
			t.Errorf("%q is valid", k)
		}
	}
}
