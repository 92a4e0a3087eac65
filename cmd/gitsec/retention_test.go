package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRetentionPlanJSONKeepsWhatBundlesNeed(t *testing.T) {
	url, _, latest := backedUpStorage(t)
	out, err := runCLI(t, nil, "retention", "plan", "--storage", url, "--repository", "acme/widgets", "--keep-last", "1", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var plan struct {
		Forget     []string `json:"forget"`
		Keep       []string `json:"keep"`
		BytesFreed *int64   `json:"bytes_freed"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || plan.BytesFreed == nil {
		t.Fatalf("output is not {forget, keep, bytes_freed}: %v\n%s", err, out)
	}
	// Both snapshots brought a pack and the newest lists both packs: the older one introduced a
	// pack the kept one needs, so nothing can be forgotten before consolidation.
	if len(plan.Keep) != 2 || plan.Keep[0] != latest.ID || len(plan.Forget) != 0 || *plan.BytesFreed != 0 {
		t.Fatalf("plan = %+v, want both snapshots kept, the newest first, nothing freed", plan)
	}
	text, err := runCLI(t, nil, "retention", "plan", "--storage", url, "--repository", "acme/widgets")
	if err != nil || !strings.Contains(text, "newest") || !strings.Contains(text, "which "+latest.ID+" needs") || !strings.Contains(text, "nothing was deleted") {
		t.Fatalf("text plan (%v):\n%s", err, text)
	}
}

func TestRetentionPlanRefusesATamperedManifest(t *testing.T) {
	url, _, latest := backedUpStorage(t)
	dir := strings.TrimPrefix(url, "file://")
	var manifest string
	_ = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && filepath.Base(path) == latest.ID+".json" && strings.Contains(path, "snapshots") {
			manifest = path
		}
		return nil
	})
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	tampered := strings.Replace(string(data), `"refs/heads/main": "`, `"refs/heads/main": "zz`, 1)
	if tampered == string(data) {
		t.Fatalf("no refs/heads/main in %s", data)
	}
	if err := os.WriteFile(manifest, []byte(tampered), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, nil, "retention", "plan", "--storage", url, "--repository", "0f0e0d0c-1111-4222-8333-444455556666", "--keep-last", "1")
	if err == nil || !strings.Contains(err.Error(), "refusing") || !strings.Contains(err.Error(), latest.ID) {
		t.Fatalf("plan over a tampered manifest = %v\n%s", err, out)
	}
}

func TestRetentionPlanNamesBadValues(t *testing.T) {
	url, _, _ := backedUpStorage(t)
	expectErrors(t, []badArgs{
		{[]string{"retention", "plan", "--storage", url, "--repository", "acme/widgets", "--keep-within", "yesterday"}, `"yesterday"`},
		{[]string{"retention", "plan", "--storage", url, "--repository", "acme/widgets", "--keep-within", "0d"}, `"0d"`},
		{[]string{"retention", "plan", "--storage", url, "--repository", "acme/widgets", "--keep-last", "-2"}, "--keep-last -2"},
		{[]string{"retention", "plan", "--storage", url, "--repository", "acme/gadgets"}, `"acme/gadgets"`},
	})
}
