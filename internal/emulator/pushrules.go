package emulator

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Branch restrictions bite on pushes as on bitbucket.org: a "push" restriction refuses every
// account it does not list, "force" refuses rewinds and "delete" refuses deletions, each per
// ref, so the rest of a push lands. git http-backend runs receive-pack, which runs the
// repository's update hook once per ref; the emulator writes the pushing account's rules next
// to the hook before every push (under the repository lock) and the hook only matches them.

const (
	pushRulesFile = "gitsec-emulator-push-rules"
	updateHook    = `#!/bin/sh
# Written by the Bitbucket emulator: enforces branch restrictions per ref.
ref="$1" old="$2" new="$3"
branch="${ref#refs/heads/}"
[ "$branch" = "$ref" ] && exit 0
rules="$GIT_DIR/` + pushRulesFile + `"
[ -f "$rules" ] || exit 0
zero=0000000000000000000000000000000000000000
while read -r kind pattern; do
	case "$branch" in
	$pattern) ;;
	*) continue ;;
	esac
	case "$kind" in
	push)
		echo "Branch \"$branch\" is restricted: you do not have permission to push to it." >&2
		exit 1 ;;
	delete)
		if [ "$new" = "$zero" ]; then
			echo "Branch \"$branch\" is restricted: it cannot be deleted." >&2
			exit 1
		fi ;;
	force)
		if [ "$old" != "$zero" ] && [ "$new" != "$zero" ] && ! git merge-base --is-ancestor "$old" "$new"; then
			echo "Branch \"$branch\" is restricted: force pushes are not allowed." >&2
			exit 1
		fi ;;
	esac
done < "$rules"
exit 0
`
)

// pushRules are the restrictions of repo that apply to a push by username, one "kind glob"
// line each. The caller holds s.mu.
func pushRules(repo *repoRec, username string) string {
	var b strings.Builder
	for _, br := range repo.BranchRestrictions {
		if br.BranchMatchKind != "glob" || br.Pattern == "" || strings.ContainsAny(br.Pattern, " \n") {
			continue
		}
		switch br.Kind {
		case "push":
			if slices.Contains(br.Users, username) {
				continue
			}
		case "force", "delete":
		default:
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", br.Kind, br.Pattern)
	}
	return b.String()
}

// installPushRules writes the update hook and the pushing account's rules into the repository
// at dir. The caller holds the repository lock, so concurrent pushes each see their own rules.
func installPushRules(dir, rules string) error {
	hook := filepath.Join(dir, "hooks", "update")
	if err := os.MkdirAll(filepath.Dir(hook), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(hook, []byte(updateHook), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, pushRulesFile), []byte(rules), 0o644)
}

// branchRestrictionInput is the body of POST .../branch-restrictions.
type branchRestrictionInput struct {
	Kind            string `json:"kind"`
	BranchMatchKind string `json:"branch_match_kind"`
	BranchType      string `json:"branch_type"`
	Pattern         string `json:"pattern"`
	Value           *int   `json:"value"`
	Users           []struct {
		UUID      string `json:"uuid"`
		Username  string `json:"username"`
		AccountID string `json:"account_id"`
	} `json:"users"`
	Groups []struct {
		Slug string `json:"slug"`
	} `json:"groups"`
}

// createBranchRestriction adds a branch permission: repository:admin and admin rights on the
// repository, as bitbucket.org asks; a duplicate of an existing rule is a 409.
func (s *Server) createBranchRestriction(w http.ResponseWriter, r *http.Request) {
	repo, ok := s.settingsRepo(w, r, "repository:admin", permAdmin)
	if !ok {
		return
	}
	var in branchRestrictionInput
	if err := decodeJSON(r, &in); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	seed := SeedBranchRestriction{Kind: in.Kind, BranchMatchKind: in.BranchMatchKind, BranchType: in.BranchType,
		Pattern: in.Pattern, Value: in.Value}
	for _, u := range in.Users {
		id := u.Username
		if id == "" {
			id = u.UUID
		}
		if id == "" {
			id = u.AccountID
		}
		rec := s.st.user(id)
		if rec == nil {
			writeError(w, http.StatusBadRequest, "Unknown user "+id, nil)
			return
		}
		seed.Users = append(seed.Users, rec.Username)
	}
	for _, g := range in.Groups {
		seed.Groups = append(seed.Groups, g.Slug)
	}
	rs := RepositorySettings{BranchRestrictions: append(s.existingRestrictions(repo), seed)}
	if err := rs.validate(func(u string) bool { return s.st.user(u) != nil }); err != nil {
		status := http.StatusBadRequest
		if strings.Contains(err.Error(), "exists already") {
			status = http.StatusConflict
		}
		writeError(w, status, err.Error(), nil)
		return
	}
	before := len(repo.BranchRestrictions)
	kept := repo.BranchRestrictions
	s.st.applySettings(repo, RepositorySettings{BranchRestrictions: []SeedBranchRestriction{seed}}, true, false)
	repo.BranchRestrictions = append(kept[:before:before], repo.BranchRestrictions...)
	if err := s.saveLocked(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusCreated, s.branchRestrictionObj(repo, repo.BranchRestrictions[len(repo.BranchRestrictions)-1]))
}

func (s *Server) existingRestrictions(repo *repoRec) []SeedBranchRestriction {
	out := make([]SeedBranchRestriction, 0, len(repo.BranchRestrictions))
	for _, br := range repo.BranchRestrictions {
		out = append(out, SeedBranchRestriction{Kind: br.Kind, BranchMatchKind: br.BranchMatchKind, BranchType: br.BranchType,
			Pattern: br.Pattern, Value: br.Value, Users: br.Users, Groups: br.Groups})
	}
	return out
}
