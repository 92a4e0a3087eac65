package emulator

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func intPtr(n int) *int { return &n }

// settingsSeed: acme/api carries branch restrictions of every shape, two default reviewers
// and a custom branching model; acme/plain has none of them (Bitbucket's defaults).
func settingsSeed() *Seed {
	seed := testSeed()
	seed.Workspaces[0].Repositories = []SeedRepository{
		{Slug: "api", Generate: &Generate{Commits: 10, Branches: 2}, RepositorySettings: RepositorySettings{
			BranchRestrictions: []SeedBranchRestriction{
				{Kind: "push", Pattern: "main", Users: []string{"alice"}, Groups: []string{"release-managers"}},
				{Kind: "require_approvals_to_merge", Pattern: "main", Value: intPtr(2)},
				{Kind: "force", BranchType: "production"},
				{Kind: "delete", Pattern: "release/*"},
				{Kind: "require_passing_builds_to_merge", Pattern: "main", Value: intPtr(1)},
			},
			DefaultReviewers: []string{"bob", "carol"},
			BranchingModel: &SeedBranchingModel{
				Development: &SeedModelBranch{Name: "develop"},
				Production:  &SeedModelBranch{UseMainbranch: true, Enabled: true},
				BranchTypes: []SeedBranchType{{Kind: "feature", Prefix: "feat/", Enabled: true}, {Kind: "bugfix", Prefix: "fix/"}},
			},
		}},
		{Slug: "plain", Generate: &Generate{Commits: 3}},
	}
	return seed
}

func errorMessage(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Message string `json:"message"`
			Detail  any    `json:"detail"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Type != "error" {
		t.Fatalf("not a Bitbucket error body: %s", body)
	}
	return e.Error.Message
}

func TestBranchRestrictionsShapesPagingAndPermissions(t *testing.T) {
	s := startTest(t, Options{Seed: settingsSeed()})
	api := s.URL() + "/2.0/repositories/acme"
	admin := adminToken(t, s, "alice", "account", "repository:admin", "pullrequest")

	all, pages := walk(t, api+"/api/branch-restrictions?pagelen=2", admin)
	if len(all) != 5 || len(pages) != 3 {
		t.Fatalf("%d restrictions over %d pages, want 5 over 3", len(all), len(pages))
	}
	ids := map[float64]bool{}
	for _, br := range all {
		for _, k := range []string{"type", "id", "kind", "branch_match_kind", "pattern", "value", "users", "groups", "links"} {
			if _, ok := br[k]; !ok {
				t.Errorf("restriction %v lacks %q", br["kind"], k)
			}
		}
		if br["type"] != "branchrestriction" {
			t.Errorf("type = %v", br["type"])
		}
		id := br["id"].(float64)
		ids[id] = true
		self := br["links"].(map[string]any)["self"].(map[string]any)["href"].(string)
		if !strings.HasSuffix(self, "/repositories/acme/api/branch-restrictions/"+jsonNumber(id)) {
			t.Errorf("links.self = %s", self)
		}
		_, hasType := br["branch_type"]
		if (br["branch_match_kind"] == "branching_model") != hasType {
			t.Errorf("%v: branch_type present %v with branch_match_kind %v", br["kind"], hasType, br["branch_match_kind"])
		}
		switch br["kind"] {
		case "push":
			users, groups := br["users"].([]any), br["groups"].([]any)
			if len(users) != 1 || users[0].(map[string]any)["nickname"] != "alice" || users[0].(map[string]any)["uuid"] == "" {
				t.Errorf("push users = %v", users)
			}
			if len(groups) != 1 || groups[0].(map[string]any)["slug"] != "release-managers" ||
				groups[0].(map[string]any)["full_slug"] != "acme:release-managers" {
				t.Errorf("push groups = %v", groups)
			}
			if br["value"] != nil || br["pattern"] != "main" || br["branch_match_kind"] != "glob" {
				t.Errorf("push = %v", br)
			}
		case "require_approvals_to_merge":
			if br["value"] != float64(2) {
				t.Errorf("approvals value = %v", br["value"])
			}
		case "force":
			if br["branch_type"] != "production" || br["pattern"] != "" {
				t.Errorf("force = %v", br)
			}
		}
	}
	if len(ids) != 5 {
		t.Errorf("ids not unique: %v", ids)
	}

	filtered, _ := walk(t, api+"/api/branch-restrictions?kind=push", admin)
	if len(filtered) != 1 || filtered[0]["kind"] != "push" {
		t.Errorf("kind=push: %v", filtered)
	}
	one := getJSON(t, api+"/api/branch-restrictions/"+jsonNumber(filtered[0]["id"].(float64)), admin)
	if one["kind"] != "push" {
		t.Errorf("single restriction = %v", one)
	}
	if st, _ := do(t, http.MethodGet, api+"/api/branch-restrictions/1", admin, nil); st != http.StatusNotFound {
		t.Errorf("unknown restriction: %d", st)
	}
	if none, _ := walk(t, api+"/plain/branch-restrictions", admin); len(none) != 0 {
		t.Errorf("plain repository restrictions = %v", none)
	}

	// The backup app's scopes lack repository:admin: Bitbucket's scope error.
	reader := adminToken(t, s, "alice", "account", "repository", "pullrequest", "webhook")
	for _, path := range []string{"/api/branch-restrictions", "/api/branching-model/settings"} {
		st, body := do(t, http.MethodGet, api+path, reader, nil)
		if st != http.StatusForbidden || errorMessage(t, body) != "Your credentials lack one or more required privilege scopes." ||
			!strings.Contains(string(body), `"required":["repository:admin"]`) {
			t.Errorf("%s without repository:admin: %d %s", path, st, body)
		}
		// bob has the scope but only read access to the repository.
		bob := adminToken(t, s, "bob", "account", "repository:admin")
		st, body = do(t, http.MethodGet, api+path, bob, nil)
		if st != http.StatusForbidden || !strings.Contains(errorMessage(t, body), "permission") {
			t.Errorf("%s as a read-only member: %d %s", path, st, body)
		}
		if st, _ := do(t, http.MethodGet, s.URL()+"/2.0/repositories/acme/missing"+strings.TrimPrefix(path, "/api"), admin, nil); st != http.StatusNotFound {
			t.Errorf("%s of a missing repository: %d", path, st)
		}
	}
}

func jsonNumber(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

func TestBranchingModelSettings(t *testing.T) {
	s := startTest(t, Options{Seed: settingsSeed()})
	api := s.URL() + "/2.0/repositories/acme"
	admin := adminToken(t, s, "alice", "account", "repository:admin")

	def := getJSON(t, api+"/plain/branching-model/settings", admin)
	if def["type"] != "branching_model_settings" || def["links"] == nil {
		t.Errorf("default model = %v", def)
	}
	dev, prod := def["development"].(map[string]any), def["production"].(map[string]any)
	if dev["use_mainbranch"] != true || dev["name"] != nil || dev["is_valid"] != true {
		t.Errorf("default development = %v", dev)
	}
	if prod["enabled"] != false || prod["is_valid"] != true || prod["use_mainbranch"] != true {
		t.Errorf("default production = %v", prod)
	}
	if _, ok := dev["enabled"]; ok {
		t.Errorf("development has enabled: %v", dev)
	}
	types := def["branch_types"].([]any)
	if len(types) != 4 {
		t.Fatalf("default branch types = %v", types)
	}
	for _, bt := range types {
		m := bt.(map[string]any)
		if m["prefix"] != m["kind"].(string)+"/" || m["enabled"] != true {
			t.Errorf("default branch type = %v", m)
		}
	}

	custom := getJSON(t, api+"/api/branching-model/settings", admin)
	dev = custom["development"].(map[string]any)
	// develop does not exist: configured but not valid.
	if dev["name"] != "develop" || dev["use_mainbranch"] != false || dev["is_valid"] != false {
		t.Errorf("custom development = %v", dev)
	}
	if prod := custom["production"].(map[string]any); prod["enabled"] != true || prod["use_mainbranch"] != true {
		t.Errorf("custom production = %v", prod)
	}
	if types := custom["branch_types"].([]any); len(types) != 2 || types[0].(map[string]any)["prefix"] != "feat/" ||
		types[1].(map[string]any)["enabled"] != false {
		t.Errorf("custom branch types = %v", types)
	}

	// Once develop is pushed the configured branch is valid.
	if st, body := do(t, http.MethodPost, s.URL()+"/_emulator/repositories/acme/api/push", "", []byte(`{"branch":"develop","commits":1}`)); st != http.StatusOK {
		t.Fatalf("push develop: %d %s", st, body)
	}
	if dev := getJSON(t, api+"/api/branching-model/settings", admin)["development"].(map[string]any); dev["is_valid"] != true {
		t.Errorf("development after the push = %v", dev)
	}
}

func TestDefaultReviewers(t *testing.T) {
	s := startTest(t, Options{Seed: settingsSeed()})
	api := s.URL() + "/2.0/repositories/acme"
	// pullrequest scope and read access are enough (a member, the backup app's scopes).
	bob := adminToken(t, s, "bob", "account", "repository", "pullrequest")
	users, pages := walk(t, api+"/api/default-reviewers?pagelen=1", bob)
	if len(users) != 2 || len(pages) != 2 {
		t.Fatalf("default reviewers = %v over %d pages", users, len(pages))
	}
	for i, want := range []string{"bob", "carol"} {
		u := users[i]
		if u["type"] != "user" || u["nickname"] != want || u["uuid"] == "" || u["account_id"] == "" || u["display_name"] == "" {
			t.Errorf("reviewer %d = %v", i, u)
		}
	}
	if none, _ := walk(t, api+"/plain/default-reviewers", bob); len(none) != 0 {
		t.Errorf("plain default reviewers = %v", none)
	}
	noPR := adminToken(t, s, "bob", "account", "repository")
	if st, body := do(t, http.MethodGet, api+"/api/default-reviewers", noPR, nil); st != http.StatusForbidden ||
		!strings.Contains(string(body), `"required":["pullrequest"]`) {
		t.Errorf("default reviewers without pullrequest scope: %d %s", st, body)
	}
	carol := adminToken(t, s, "carol", "account", "repository", "pullrequest")
	if st, _ := do(t, http.MethodGet, s.URL()+"/2.0/repositories/acme-labs/sandbox/default-reviewers", carol, nil); st != http.StatusForbidden {
		t.Errorf("default reviewers of a private repository carol cannot read: %d", st)
	}
}

func TestSettingsAdminRouteAndRestart(t *testing.T) {
	dataDir := t.TempDir()
	s, err := startNoCleanup(Options{DataDir: dataDir, Seed: settingsSeed(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	admin := adminToken(t, s, "alice", "account", "repository:admin", "pullrequest")
	set := s.URL() + "/_emulator/repositories/acme/plain/settings"
	st, body := do(t, http.MethodPut, set, "", []byte(`{"branch_restrictions":[{"kind":"restrict_merges","pattern":"main","users":["bob"]}],"default_reviewers":["alice"]}`))
	if st != http.StatusOK {
		t.Fatalf("set settings: %d %s", st, body)
	}
	// Only the parts given change: the api repository's settings stay.
	if st, body := do(t, http.MethodPut, s.URL()+"/_emulator/repositories/acme/api/settings", "", []byte(`{"branching_model":{"development":{"use_mainbranch":true}}}`)); st != http.StatusOK {
		t.Fatalf("set branching model: %d %s", st, body)
	}
	for body, want := range map[string]string{
		`{"branch_restrictions":[{"kind":"nonsense","pattern":"x"}]}`:                           "unknown kind",
		`{"default_reviewers":["nobody"]}`:                                                      "unknown user",
		`{"branch_restrictions":[{"kind":"force","pattern":"x","users":["alice"]}]}`:            "only allowed on push",
		`{"branch_restrictions":[{"kind":"push","pattern":"a"},{"kind":"push","pattern":"a"}]}`: "exists already",
	} {
		if st, out := do(t, http.MethodPut, set, "", []byte(body)); st != http.StatusBadRequest || !strings.Contains(string(out), want) {
			t.Errorf("PUT %s: %d %s, want 400 %q", body, st, out, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := startTest(t, Options{DataDir: dataDir})
	api := s2.URL() + "/2.0/repositories/acme"
	brs, _ := walk(t, api+"/plain/branch-restrictions", admin)
	if len(brs) != 1 || brs[0]["kind"] != "restrict_merges" || len(brs[0]["users"].([]any)) != 1 {
		t.Errorf("restrictions after restart = %v", brs)
	}
	if old, _ := walk(t, api+"/api/branch-restrictions", admin); len(old) != 5 {
		t.Errorf("api restrictions after restart = %d, want 5", len(old))
	}
	if revs, _ := walk(t, api+"/plain/default-reviewers", admin); len(revs) != 1 || revs[0]["nickname"] != "alice" {
		t.Errorf("reviewers after restart = %v", revs)
	}
	if revs, _ := walk(t, api+"/api/default-reviewers", admin); len(revs) != 2 {
		t.Errorf("api reviewers after restart = %v", revs)
	}
	dev := getJSON(t, api+"/api/branching-model/settings", admin)["development"].(map[string]any)
	if dev["use_mainbranch"] != true {
		t.Errorf("development after the admin change = %v", dev)
	}
}

func TestSeedSettingsFromYAML(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seed.yaml")
	yaml := `users: [{username: alice}, {username: bob}]
workspaces:
  - slug: acme
    admins: [alice]
    repositories:
      - slug: api
        generate: {commits: 2}
        branch_restrictions:
          - {kind: push, pattern: main, users: [alice]}
          - {kind: require_approvals_to_merge, pattern: main, value: 2}
        default_reviewers: [bob]
        branching_model:
          production: {name: main, enabled: true}
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	seed, err := LoadSeed(path)
	if err != nil {
		t.Fatal(err)
	}
	r := seed.Workspaces[0].Repositories[0]
	if len(r.BranchRestrictions) != 2 || *r.BranchRestrictions[1].Value != 2 || r.DefaultReviewers[0] != "bob" ||
		r.BranchingModel.Production.Name != "main" {
		t.Fatalf("parsed settings = %+v", r.RepositorySettings)
	}
	s := startTest(t, Options{Seed: seed})
	admin := adminToken(t, s, "alice", "account", "repository:admin")
	prod := getJSON(t, s.URL()+"/2.0/repositories/acme/api/branching-model/settings", admin)["production"].(map[string]any)
	if prod["name"] != "main" || prod["is_valid"] != true || prod["enabled"] != true {
		t.Errorf("production = %v", prod)
	}

	bad := strings.Replace(yaml, "default_reviewers: [bob]", "default_reviewers: [zed]", 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSeed(path); err == nil || !strings.Contains(err.Error(), "zed") {
		t.Errorf("seed with an unknown reviewer: %v", err)
	}
}

// GET /commit/{hash} resolves unique abbreviations and answers with the full hash, as
// Bitbucket does for the 12-character hashes in PR payloads.
func TestGetCommitByAbbreviatedHash(t *testing.T) {
	s := startTest(t, Options{Seed: settingsSeed()})
	tok := adminToken(t, s, "alice")
	api := s.URL() + "/2.0/repositories/acme/api"
	head := getJSON(t, api+"/refs/branches/main", tok)["target"].(map[string]any)["hash"].(string)
	for _, prefix := range []string{head[:12], head[:7], head} {
		got := getJSON(t, api+"/commit/"+prefix, tok)
		if got["hash"] != head {
			t.Errorf("commit/%s hash = %v, want %s", prefix, got["hash"], head)
		}
	}
	if st, _ := do(t, http.MethodGet, api+"/commit/0123456789ab", tok, nil); st != http.StatusNotFound {
		t.Errorf("unknown commit: %d", st)
	}
}
