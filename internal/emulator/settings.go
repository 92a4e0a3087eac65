package emulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Repository settings a backup exports: branch restrictions (branch permissions and merge
// checks), the branching model and the default reviewers. Shapes follow Atlassian's
// branchrestriction, branching_model_settings and paginated_accounts schemas and the
// recorded branch-restrictions page quoted in checkov's documentation (value always
// present, null when unused; branch_type only on branching_model matches).
//
// Permissions follow the OpenAPI document: branch-restrictions and branching-model/settings
// need the repository:admin scope and admin rights on the repository (403 otherwise);
// default-reviewers needs the pullrequest scope and read access ("403 if the authenticated
// user does not have access to view the default reviewers").

// Restriction kinds (the branchrestriction schema's enum).
var restrictionKinds = []string{
	"push", "delete", "force", "restrict_merges", "require_tasks_to_be_completed",
	"require_approvals_to_merge", "require_review_group_approvals_to_merge",
	"require_default_reviewer_approvals_to_merge", "require_no_changes_requested",
	"require_passing_builds_to_merge", "require_commits_behind", "reset_pullrequest_approvals_on_change",
	"smart_reset_pullrequest_approvals", "reset_pullrequest_changes_requested_on_change",
	"require_all_dependencies_merged", "enforce_merge_checks", "allow_auto_merge_when_builds_pass",
	"require_all_comments_resolved",
}

// Branch types a branching_model restriction may match; the model's own prefixes are the
// first four.
var (
	restrictionBranchTypes = []string{"feature", "bugfix", "release", "hotfix", "development", "production"}
	modelBranchKinds       = []string{"release", "hotfix", "feature", "bugfix"}
)

type branchRestrictionRec struct {
	ID              int      `json:"id"`
	Kind            string   `json:"kind"`
	BranchMatchKind string   `json:"branch_match_kind"`
	BranchType      string   `json:"branch_type,omitempty"`
	Pattern         string   `json:"pattern"`
	Value           *int     `json:"value,omitempty"`
	Users           []string `json:"users,omitempty"`
	Groups          []string `json:"groups,omitempty"` // group slugs in the repository's workspace
}

type modelBranchRec struct {
	Name          string `json:"name,omitempty"`
	UseMainbranch bool   `json:"use_mainbranch"`
	Enabled       bool   `json:"enabled"` // production only
}

type branchTypeRec struct {
	Kind    string `json:"kind"`
	Prefix  string `json:"prefix"`
	Enabled bool   `json:"enabled"`
}

type branchingModelRec struct {
	Development modelBranchRec  `json:"development"`
	Production  modelBranchRec  `json:"production"`
	BranchTypes []branchTypeRec `json:"branch_types"`
}

// defaultBranchingModel is what a repository that never configured one answers: development
// tracks the main branch, production is off, the four standard prefixes are on.
func defaultBranchingModel() *branchingModelRec {
	m := &branchingModelRec{
		Development: modelBranchRec{UseMainbranch: true},
		Production:  modelBranchRec{UseMainbranch: true},
	}
	for _, k := range modelBranchKinds {
		m.BranchTypes = append(m.BranchTypes, branchTypeRec{Kind: k, Prefix: k + "/", Enabled: true})
	}
	return m
}

// SeedBranchRestriction is one branch permission or merge check. BranchMatchKind defaults to
// glob (match Pattern), or branching_model when BranchType is set. Users (usernames) and
// Groups (group slugs) are the exempted ones, allowed on push and restrict_merges only; Value
// is the number the approval, build and commits-behind checks need.
type SeedBranchRestriction struct {
	Kind            string   `yaml:"kind" json:"kind"`
	BranchMatchKind string   `yaml:"branch_match_kind,omitempty" json:"branch_match_kind,omitempty"`
	BranchType      string   `yaml:"branch_type,omitempty" json:"branch_type,omitempty"`
	Pattern         string   `yaml:"pattern,omitempty" json:"pattern,omitempty"`
	Value           *int     `yaml:"value,omitempty" json:"value,omitempty"`
	Users           []string `yaml:"users,omitempty" json:"users,omitempty"`
	Groups          []string `yaml:"groups,omitempty" json:"groups,omitempty"`
}

// SeedModelBranch is the development or production branch of a branching model: a named
// branch, or the main branch when UseMainbranch. Enabled switches production on.
type SeedModelBranch struct {
	Name          string `yaml:"name,omitempty" json:"name,omitempty"`
	UseMainbranch bool   `yaml:"use_mainbranch,omitempty" json:"use_mainbranch,omitempty"`
	Enabled       bool   `yaml:"enabled,omitempty" json:"enabled,omitempty"`
}

// SeedBranchType is one prefix of a branching model (kind release, hotfix, feature or bugfix).
type SeedBranchType struct {
	Kind    string `yaml:"kind" json:"kind"`
	Prefix  string `yaml:"prefix,omitempty" json:"prefix,omitempty"`
	Enabled bool   `yaml:"enabled,omitempty" json:"enabled,omitempty"`
}

// SeedBranchingModel replaces the default branching model. Omitted parts keep the default:
// development tracking the main branch, production off, the four standard prefixes on.
type SeedBranchingModel struct {
	Development *SeedModelBranch `yaml:"development,omitempty" json:"development,omitempty"`
	Production  *SeedModelBranch `yaml:"production,omitempty" json:"production,omitempty"`
	BranchTypes []SeedBranchType `yaml:"branch_types,omitempty" json:"branch_types,omitempty"`
}

// RepositorySettings are the settings knobs of a repository, shared by the seed and the admin
// route PUT /_emulator/repositories/{ws}/{repo}/settings (which replaces each part given).
type RepositorySettings struct {
	BranchRestrictions []SeedBranchRestriction `yaml:"branch_restrictions,omitempty" json:"branch_restrictions,omitempty"`
	DefaultReviewers   []string                `yaml:"default_reviewers,omitempty" json:"default_reviewers,omitempty"`
	BranchingModel     *SeedBranchingModel     `yaml:"branching_model,omitempty" json:"branching_model,omitempty"`
}

var groupSlugRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// validate checks the settings; knownUser reports whether a username exists.
func (rs *RepositorySettings) validate(knownUser func(string) bool) error {
	type match struct{ kind, by, what string }
	seen := map[match]bool{}
	for i, br := range rs.BranchRestrictions {
		where := fmt.Sprintf("branch_restrictions[%d]", i)
		if !slices.Contains(restrictionKinds, br.Kind) {
			return fmt.Errorf("%s: unknown kind %q", where, br.Kind)
		}
		mk := br.BranchMatchKind
		if mk == "" {
			mk = "glob"
			if br.BranchType != "" {
				mk = "branching_model"
			}
		}
		switch mk {
		case "glob":
			if br.Pattern == "" || br.BranchType != "" {
				return fmt.Errorf("%s: a glob restriction needs a pattern and no branch_type", where)
			}
		case "branching_model":
			if !slices.Contains(restrictionBranchTypes, br.BranchType) || br.Pattern != "" {
				return fmt.Errorf("%s: a branching_model restriction needs a branch_type (%s) and no pattern",
					where, strings.Join(restrictionBranchTypes, ", "))
			}
		default:
			return fmt.Errorf("%s: branch_match_kind must be glob or branching_model", where)
		}
		key := match{br.Kind, mk, br.Pattern + br.BranchType}
		if seen[key] {
			return fmt.Errorf("%s: a %s restriction on %q exists already", where, br.Kind, key.what)
		}
		seen[key] = true
		if (len(br.Users) > 0 || len(br.Groups) > 0) && br.Kind != "push" && br.Kind != "restrict_merges" {
			return fmt.Errorf("%s: users and groups are only allowed on push and restrict_merges", where)
		}
		for _, u := range br.Users {
			if !knownUser(u) {
				return fmt.Errorf("%s: unknown user %q", where, u)
			}
		}
		for _, g := range br.Groups {
			if !groupSlugRE.MatchString(g) {
				return fmt.Errorf("%s: invalid group slug %q", where, g)
			}
		}
		if br.Value != nil && *br.Value < 0 {
			return fmt.Errorf("%s: value must not be negative", where)
		}
	}
	for _, u := range rs.DefaultReviewers {
		if !knownUser(u) {
			return fmt.Errorf("default_reviewers: unknown user %q", u)
		}
	}
	if m := rs.BranchingModel; m != nil {
		for _, b := range []*SeedModelBranch{m.Development, m.Production} {
			if b != nil && b.UseMainbranch == (b.Name != "") {
				return fmt.Errorf("branching_model: a branch has either a name or use_mainbranch")
			}
		}
		kinds := map[string]bool{}
		for _, bt := range m.BranchTypes {
			if !slices.Contains(modelBranchKinds, bt.Kind) || kinds[bt.Kind] {
				return fmt.Errorf("branching_model: branch type %q is unknown or listed twice", bt.Kind)
			}
			kinds[bt.Kind] = true
			if bt.Enabled && bt.Prefix == "" {
				return fmt.Errorf("branching_model: enabled branch type %s needs a prefix", bt.Kind)
			}
		}
	}
	return nil
}

func (st *state) newRestrictionID() int {
	if st.NextRestrictionID < 1 {
		// Bitbucket's ids are large global integers (26520789 in a recorded page).
		st.NextRestrictionID = 26520000
	}
	id := st.NextRestrictionID
	st.NextRestrictionID++
	return id
}

// applySettings replaces the parts of repo's settings that rs gives (validated already).
func (st *state) applySettings(repo *repoRec, rs RepositorySettings, replaceRestrictions, replaceReviewers bool) {
	if replaceRestrictions {
		repo.BranchRestrictions = nil
		for _, br := range rs.BranchRestrictions {
			rec := &branchRestrictionRec{ID: st.newRestrictionID(), Kind: br.Kind, BranchMatchKind: br.BranchMatchKind,
				BranchType: br.BranchType, Pattern: br.Pattern, Value: br.Value,
				Users: slices.Clone(br.Users), Groups: slices.Clone(br.Groups)}
			if rec.BranchMatchKind == "" {
				rec.BranchMatchKind = "glob"
				if rec.BranchType != "" {
					rec.BranchMatchKind = "branching_model"
				}
			}
			repo.BranchRestrictions = append(repo.BranchRestrictions, rec)
		}
	}
	if replaceReviewers {
		repo.DefaultReviewers = slices.Clone(rs.DefaultReviewers)
	}
	if m := rs.BranchingModel; m != nil {
		model := defaultBranchingModel()
		if m.Development != nil {
			model.Development = modelBranchRec{Name: m.Development.Name, UseMainbranch: m.Development.UseMainbranch}
		}
		if m.Production != nil {
			model.Production = modelBranchRec{Name: m.Production.Name, UseMainbranch: m.Production.UseMainbranch,
				Enabled: m.Production.Enabled}
		}
		if len(m.BranchTypes) > 0 {
			model.BranchTypes = nil
			for _, bt := range m.BranchTypes {
				model.BranchTypes = append(model.BranchTypes, branchTypeRec(bt))
			}
		}
		repo.BranchingModel = model
	}
}

func (s *Server) registerSettings(mux *http.ServeMux) {
	base := "/2.0/repositories/{workspace}/{repo}"
	s.handle(mux, "GET "+base+"/branch-restrictions", s.listBranchRestrictions)
	s.handle(mux, "POST "+base+"/branch-restrictions", s.createBranchRestriction)
	s.handle(mux, "GET "+base+"/branch-restrictions/{id}", s.getBranchRestriction)
	s.handle(mux, "GET "+base+"/branching-model/settings", s.getBranchingModelSettings)
	s.handle(mux, "GET "+base+"/default-reviewers", s.listDefaultReviewers)
}

func (s *Server) branchRestrictionObj(repo *repoRec, br *branchRestrictionRec) obj {
	users := []any{}
	for _, u := range br.Users {
		if a := s.accountByName(u); a != nil {
			users = append(users, a)
		}
	}
	groups := []any{}
	ws := s.st.workspace(repo.Workspace)
	for _, g := range br.Groups {
		grp := obj{"type": "group", "name": titleCase(strings.ReplaceAll(g, "-", " ")), "slug": g,
			"full_slug": repo.Workspace + ":" + g,
			"links": obj{"self": href(s.apiBase() + "/groups/" + repo.Workspace + "/" + g),
				"html": href(s.base + "/" + repo.Workspace + "/workspace/settings/groups/" + g)}}
		if ws != nil {
			grp["workspace"] = s.workspaceMini(ws)
		}
		groups = append(groups, grp)
	}
	o := obj{
		"type": "branchrestriction", "id": br.ID, "kind": br.Kind, "branch_match_kind": br.BranchMatchKind,
		"pattern": br.Pattern, "value": nil, "users": users, "groups": groups,
		"links": obj{"self": href(s.repoAPI(repo) + "/branch-restrictions/" + strconv.Itoa(br.ID))},
	}
	if br.Value != nil {
		o["value"] = *br.Value
	}
	if br.BranchMatchKind == "branching_model" {
		o["branch_type"] = br.BranchType
	}
	return o
}

// settingsRepo authenticates a settings read: scope, then the repository and the caller's
// permission on it.
func (s *Server) settingsRepo(w http.ResponseWriter, r *http.Request, scope string, need permission) (*repoRec, bool) {
	c, ok := s.auth(w, r, scope, false)
	if !ok {
		return nil, false
	}
	_, repo, ok := s.findRepo(w, r, c, need)
	return repo, ok
}

// settingsPage is settingsRepo for a paged list (default pagelen 10, max 100).
func (s *Server) settingsPage(w http.ResponseWriter, r *http.Request, scope string, need permission) (*repoRec, pageReq, bool) {
	repo, ok := s.settingsRepo(w, r, scope, need)
	if !ok {
		return nil, pageReq{}, false
	}
	p, err := parsePage(r, defaultPagelen, maxPagelen)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return nil, pageReq{}, false
	}
	return repo, p, true
}

func (s *Server) listBranchRestrictions(w http.ResponseWriter, r *http.Request) {
	repo, p, ok := s.settingsPage(w, r, "repository:admin", permAdmin)
	if !ok {
		return
	}
	kind, pattern := r.URL.Query().Get("kind"), r.URL.Query().Get("pattern")
	var list []*branchRestrictionRec
	for _, br := range repo.BranchRestrictions {
		if (kind == "" || br.Kind == kind) && (pattern == "" || br.Pattern == pattern) {
			list = append(list, br)
		}
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, list, func(br *branchRestrictionRec) any {
		return s.branchRestrictionObj(repo, br)
	}))
}

func (s *Server) getBranchRestriction(w http.ResponseWriter, r *http.Request) {
	repo, ok := s.settingsRepo(w, r, "repository:admin", permAdmin)
	if !ok {
		return
	}
	id, _ := strconv.Atoi(r.PathValue("id"))
	for _, br := range repo.BranchRestrictions {
		if br.ID == id {
			writeJSON(w, http.StatusOK, s.branchRestrictionObj(repo, br))
			return
		}
	}
	writeError(w, http.StatusNotFound, "Branch restriction not found", nil)
}

func (s *Server) getBranchingModelSettings(w http.ResponseWriter, r *http.Request) {
	repo, ok := s.settingsRepo(w, r, "repository:admin", permAdmin)
	if !ok {
		return
	}
	m := repo.BranchingModel
	if m == nil {
		m = defaultBranchingModel()
	}
	dir := s.gitDir(repo.Workspace, repo.Slug)
	branch := func(b modelBranchRec, production bool) obj {
		// is_valid: the named branch exists; always true when tracking the main branch.
		valid := b.UseMainbranch
		var name any
		if !b.UseMainbranch {
			name = b.Name
			_, err := resolveCommit(s.ctx, dir, "refs/heads/"+b.Name)
			valid = err == nil
		}
		o := obj{"is_valid": valid, "name": name, "use_mainbranch": b.UseMainbranch}
		if production {
			o["enabled"] = b.Enabled
		}
		return o
	}
	types := []any{}
	for _, bt := range m.BranchTypes {
		types = append(types, obj{"kind": bt.Kind, "enabled": bt.Enabled, "prefix": bt.Prefix})
	}
	writeJSON(w, http.StatusOK, obj{
		"type":         "branching_model_settings",
		"development":  branch(m.Development, false),
		"production":   branch(m.Production, true),
		"branch_types": types,
		// A string in Atlassian's own example, kept as such.
		"default_branch_deletion": "false",
		"links":                   obj{"self": href(s.repoAPI(repo) + "/branching-model/settings")},
	})
}

func (s *Server) listDefaultReviewers(w http.ResponseWriter, r *http.Request) {
	repo, p, ok := s.settingsPage(w, r, "pullrequest", permRead)
	if !ok {
		return
	}
	var users []*userRec
	for _, name := range repo.DefaultReviewers {
		if u := s.st.user(name); u != nil {
			users = append(users, u)
		}
	}
	writeJSON(w, http.StatusOK, pageEnvelope(s, r, p, users, func(u *userRec) any { return s.accountObj(u) }))
}

// adminSetSettings replaces the parts of a repository's settings the body gives
// (branch_restrictions, default_reviewers, branching_model); an empty list clears.
func (s *Server) adminSetSettings(w http.ResponseWriter, r *http.Request) {
	var raw map[string]json.RawMessage
	var rs RepositorySettings
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, &raw)
	}
	if err == nil {
		err = json.Unmarshal(body, &rs)
	}
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	repo, _, ok := s.adminRepo(w, r, "")
	if !ok {
		return
	}
	if err := rs.validate(func(u string) bool { return s.st.user(u) != nil }); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	_, hasRestrictions := raw["branch_restrictions"]
	_, hasReviewers := raw["default_reviewers"]
	s.st.applySettings(repo, rs, hasRestrictions, hasReviewers)
	if err := s.saveLocked(); err != nil {
		adminError(w, http.StatusInternalServerError, err.Error())
		return
	}
	restrictions := []any{}
	for _, br := range repo.BranchRestrictions {
		restrictions = append(restrictions, s.branchRestrictionObj(repo, br))
	}
	writeJSON(w, http.StatusOK, obj{"branch_restrictions": restrictions, "default_reviewers": repo.DefaultReviewers})
}
