package gitmirror

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// RefUpdate is what the remote did with one pushed ref.
type RefUpdate struct {
	Ref string
	// OK: the remote has the ref at the pushed commit (updated, created or already there).
	OK bool
	// Reason is the remote's word when it refused the ref ("hook declined", "non-fast-forward").
	Reason string
}

// PushRefs sends refs (full names) to the same names on the remote and reports each ref's
// outcome: a remote that refuses some refs (a branch restriction) still takes the others, and
// the refusal is a RefUpdate, not an error. An error means the push as a whole failed
// (unreachable remote, credentials, a cut connection); the remote may then hold any subset.
//
// The git CLI does the push when it can (it streams the existing packs; go-git re-encodes every
// object in memory), with --porcelain for per-ref results; go-git is the fallback, one ref at a
// time after a refused batch.
// progress, if set, sees the git CLI's progress (Bytes: what was written so far).
func (m *Mirror) PushRefs(ctx context.Context, remoteURL string, auth transport.AuthMethod, refs []string, force bool, progress func(Progress)) ([]RefUpdate, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	updates, err := m.cliPush(ctx, remoteURL, auth, refs, force, progress)
	if !errors.Is(err, errCLIUnsupported) {
		return updates, err
	}
	if err := m.Push(ctx, remoteURL, auth, refs, force); err == nil {
		out := make([]RefUpdate, 0, len(refs))
		for _, r := range refs {
			out = append(out, RefUpdate{Ref: r, OK: true})
		}
		return out, nil
	} else if !isRefRejection(err) {
		return nil, err
	}
	out := make([]RefUpdate, 0, len(refs))
	for _, r := range refs {
		err := m.Push(ctx, remoteURL, auth, []string{r}, force)
		switch {
		case err == nil:
			out = append(out, RefUpdate{Ref: r, OK: true})
		case isRefRejection(err):
			out = append(out, RefUpdate{Ref: r, Reason: err.Error()})
		default:
			return out, err
		}
	}
	return out, nil
}

// isRefRejection tells a remote's refusal of refs from a failed transport.
func isRefRejection(err error) bool {
	s := err.Error()
	return strings.Contains(s, "rejected") || strings.Contains(s, "declined") || strings.Contains(s, "non-fast-forward")
}

func (m *Mirror) cliPush(ctx context.Context, remoteURL string, auth transport.AuthMethod, refs []string, force bool, progress func(Progress)) ([]RefUpdate, error) {
	gitPath, err := gitBinary()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(remoteURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return nil, fmt.Errorf("%w: only http(s) remotes without credentials in the URL are pushed with git", errCLIUnsupported)
	}
	env := cleanGitEnv()
	var secrets []string
	switch a := auth.(type) {
	case nil:
	case *githttp.BasicAuth:
		encoded := base64.StdEncoding.EncodeToString([]byte(a.Username + ":" + a.Password))
		env = append(env, "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic "+encoded)
		secrets = append(secrets, encoded, a.Password)
	default:
		return nil, fmt.Errorf("%w: auth method %s", errCLIUnsupported, auth.Name())
	}
	args := []string{"-C", m.dir, "-c", "credential.helper=", "-c", "gc.auto=0", "-c", "maintenance.auto=false",
		"-c", "push.negotiate=false", "push", "--porcelain", "--progress", "--no-verify", "--no-recurse-submodules"}
	if force {
		args = append(args, "--force")
	}
	args = append(args, remoteURL)
	for _, r := range refs {
		args = append(args, r+":"+r)
	}
	cmd := exec.CommandContext(ctx, gitPath, args...)
	cmd.Env = env
	var stdout bytes.Buffer
	reporter := newProgressReporter(progress)
	reporter.bytesFromText = true
	stderr := &stderrTail{reporter: reporter}
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	killProcessGroupOnCancel(cmd)
	cmd.WaitDelay = 10 * time.Second
	if commandStarted != nil {
		commandStarted(cmd)
	}
	runErr := cmd.Run()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, fmt.Errorf("git push %s: %w", redactURL(remoteURL), ctxErr)
	}
	updates := parsePorcelain(stdout.String())
	if runErr == nil || (len(updates) == len(refs) && completePorcelain(stdout.String())) {
		return updates, nil
	}
	return nil, classifyCLIError("push", remoteURL, stderr.tail(secrets), runErr)
}

// parsePorcelain reads `git push --porcelain`: "<flag>\t<from>:<to>\t<summary> (<reason>)".
func parsePorcelain(out string) []RefUpdate {
	var updates []RefUpdate
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 3 || line[1] != '\t' {
			continue
		}
		parts := strings.SplitN(line[2:], "\t", 2)
		_, to, ok := strings.Cut(parts[0], ":")
		if !ok {
			continue
		}
		up := RefUpdate{Ref: to, OK: line[0] != '!'}
		if !up.OK && len(parts) == 2 {
			up.Reason = strings.TrimSpace(parts[1])
		}
		updates = append(updates, up)
	}
	return updates
}

// completePorcelain: git printed its closing "Done", so the per-ref lines are the whole story.
func completePorcelain(out string) bool {
	return strings.HasSuffix(strings.TrimSpace(out), "Done")
}
