package api_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/browsertest"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/internal/websession"
)

// The dashboard in a real headless Chromium against the whole stack: the seed's steps as a user
// clicks them, from the login link to signing out.

// page drives one browser tab and saves screenshots into .screenshots/ (git-ignored).
type page struct {
	t   *testing.T
	ctx context.Context
	// poll is the pause between two checks of waitFor (150 ms when zero); the timing test
	// polls faster so that its numbers are not the poll's.
	poll time.Duration
}

func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		p.t.Fatalf("%s: %v (page: %s)", what, err, p.text())
	}
}

// waitFor evaluates a JavaScript predicate until it is true. It asks from Go rather than with a
// polling script, so that a navigation in between (the connect flow crosses two origins) only
// costs a retry.
func (p *page) waitFor(what, predicate string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+predicate+")"))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			p.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
			p.t.Fatalf("waiting for %s (%s): last error %v\npage text: %s", what, timeout, lastErr, p.text())
		}
		if p.poll == 0 {
			p.poll = 150 * time.Millisecond
		}
		time.Sleep(p.poll)
	}
}

func (p *page) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (p *page) text() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.location.href + "\n" + (document.body ? document.body.innerText : "")`))
	return v
}

func (p *page) shot(name string) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return
	}
	dir := filepath.Join(root, ".screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		_ = os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
	}
}

func (e *connectEnv) loginLink(tenant, next string) string {
	e.t.Helper()
	link, _, err := websession.IssueLoginLink(context.Background(), e.store, e.tenantID(tenant), e.apiURL, next, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return link
}

func TestDashboardWalksTheSeedInABrowser(t *testing.T) {
	emulatorDir := t.TempDir()
	e := newConnectEnvWith(t, connectOptions{emulatorDir: emulatorDir})
	p := &page{t: t, ctx: browsertest.New(t, browsertest.Options{Width: 1280, Height: 900})}

	// Sign in by login link; the first screen is Add Provider with its empty state.
	p.do("open the login link", chromedp.Navigate(e.loginLink("acme-corp", "/repositories/add-provider")))
	p.waitFor("the Add Provider page", `location.pathname === "/repositories/add-provider" && document.querySelector("h1") && document.querySelector("h1").textContent === "Add Provider" && document.body.innerText.includes("No provider installation yet")`, 15*time.Second)
	if got := p.eval(`document.querySelector("button.card[disabled]").innerText`); !strings.Contains(got, "GitLab") || !strings.Contains(got, "Coming soon") {
		t.Errorf("the disabled provider card says %q; want GitLab, coming soon", got)
	}
	p.shot("add-provider-empty")

	// Click the Bitbucket card, grant access on the emulator's consent page as alice, come back.
	p.do("click the Bitbucket card", chromedp.Click("#provider-bitbucket"))
	p.waitFor("the consent page", fmt.Sprintf(`location.origin === %q && !!document.querySelector('button[value="grant"]')`, e.emu.URL()), 15*time.Second)
	p.do("grant as alice", chromedp.Click(`input[value="alice"]`), chromedp.Click(`button[value="grant"]`))
	p.waitFor("the installation to become active with its workspaces",
		`location.pathname === "/repositories/add-provider" && (() => { const r = document.querySelector('tr[data-status="active"]'); return !!r && r.innerText.includes("acme-labs") && r.innerText.includes("webhook registered") && r.innerText.includes("alice"); })()`, 90*time.Second)
	p.shot("add-provider")
	status, body := e.call("GET", "/api/v1/installations", "acme-corp", "")
	insts := body["installations"].([]any)
	if status != 200 || len(insts) != 1 || insts[0].(map[string]any)["status"] != "active" {
		t.Fatalf("installations after the browser's connect = %d %v", status, body)
	}

	// Repositories > Bitbucket from the sidebar.
	p.do("open Repositories > Bitbucket", chromedp.Click(`a[data-nav="bitbucket"]`))
	p.waitFor("the repository list", `!!document.querySelector('tr[data-repository="acme/web"]') && !!document.querySelector('tr[data-repository="acme-labs/lab-2"]')`, 15*time.Second)
	p.shot("repositories")

	// Exclude acme/web with its toggle; the API agrees.
	instID := insts[0].(map[string]any)["id"].(string)
	web := e.repository("acme-corp", instID, "acme/web")
	e.waitSnapshotCount("acme-corp", web, 1)
	p.do("exclude acme/web", chromedp.Click(`input[data-include="acme/web"]`))
	included := func(want bool) func() bool {
		return func() bool { return e.repository("acme-corp", instID, "acme/web")["included"] == want }
	}
	e.waitFor("the API to show acme/web excluded", 10*time.Second, included(false))

	// Include it again; then a commit lands upstream without a webhook (straight into the
	// emulator's repository on disk), so only "Back up now" can bring it into a snapshot.
	p.do("include acme/web again", chromedp.Click(`input[data-include="acme/web"]`))
	e.waitFor("the API to show acme/web included", 10*time.Second, included(true))
	before := len(e.snapshots("acme-corp", web))
	commitWithoutWebhook(t, filepath.Join(emulatorDir, "git", "acme", "web.git"), "main")
	p.do("open acme/web", chromedp.Click(`tr[data-repository="acme/web"] a`))
	p.waitFor("the repository page", `document.querySelector("h1") && document.querySelector("h1").textContent === "acme/web" && document.querySelectorAll("tr[data-snapshot]").length === `+fmt.Sprint(before), 15*time.Second)
	p.do("back up now", chromedp.Click("#backup-now"))
	p.waitFor("the new snapshot", fmt.Sprintf(`document.querySelectorAll("tr[data-snapshot]").length === %d && document.querySelector("tr[data-snapshot] td:nth-child(2)").textContent === "manual"`, before+1), 60*time.Second)
	p.shot("repository")

	// Retention on the same page: GitSec's default is shown; keep-last 1 saved from the form
	// reaches the API; the preview tells what it would forget; the newest snapshot is put under
	// legal hold through the dialog.
	p.waitFor("the retention section", `!!document.querySelector("#retention-source") && document.querySelector("#retention-source").textContent.includes("GitSec's default") && document.querySelector("#ret-keep_daily").value === "30"`, 10*time.Second)
	p.do("set keep-last 1", chromedp.SetValue("#ret-keep_last", "1"), chromedp.Click("#retention-save"))
	e.waitFor("the API to show the repository's own policy", 10*time.Second, func() bool {
		_, body := e.call("GET", "/api/v1/repositories/"+web["id"].(string)+"/retention", "acme-corp", "")
		policy, _ := body["policy"].(map[string]any)
		return body["source"] == "repository" && policy["keep_last"] == 1.0 && policy["keep_daily"] == 30.0
	})
	p.waitFor("the saved policy", `document.querySelector("#retention-source").textContent.includes("this repository")`, 10*time.Second)
	p.do("preview the policy", chromedp.Click("#retention-preview"))
	p.waitFor("the preview", `!!document.querySelector("#retention-plan") && /would forget \d+ of \d+ snapshots/.test(document.querySelector("#retention-plan").textContent)`, 15*time.Second)
	p.do("open the legal hold dialog", chromedp.Click(`tr[data-snapshot] button[data-hold]`))
	p.waitFor("the legal hold dialog", `!!document.querySelector("#hold-reason")`, 5*time.Second)
	p.do("hold with a reason", chromedp.SendKeys("#hold-reason", "case 2026-17"), chromedp.Click("#hold-confirm"))
	p.waitFor("the hold badge", `document.querySelector("tr[data-snapshot]").innerText.includes("legal hold") && document.querySelector("tr[data-snapshot]").innerText.includes("case 2026-17")`, 10*time.Second)
	if snaps := e.snapshots("acme-corp", web); len(snaps) == 0 || snaps[0]["legal_hold"] == nil || snaps[0]["legal_hold"].(map[string]any)["reason"] != "case 2026-17" {
		t.Fatalf("the newest snapshot after the dashboard's hold: %v", snaps[0])
	}
	p.shot("repository-retention")

	// The other screens render their data.
	p.do("open Activity", chromedp.Click(`a[data-nav="activity"]`))
	p.waitFor("recent backups", `document.querySelector("h1").textContent === "Activity" && document.body.innerText.includes("acme/web")`, 15*time.Second)
	p.shot("activity")
	p.do("open the audit log", chromedp.Click(`a[data-nav="audit-log"]`))
	p.waitFor("audit events", `document.body.innerText.includes("repository.excluded") && document.body.innerText.includes("dashboard:login_link")`, 15*time.Second)
	p.do("show an event's JSON", chromedp.Click(`button.link`))
	p.waitFor("the event as JSON", `!!document.querySelector("tr.detail:not([hidden]) pre")`, 5*time.Second)
	p.shot("audit-log")
	p.do("open API tokens", chromedp.Click(`a[data-nav="api-tokens"]`))
	p.waitFor("the token list", `document.querySelectorAll("tr[data-token]").length >= 1`, 15*time.Second)
	p.do("create a token", chromedp.SendKeys("#token-name", "from-the-dashboard"), chromedp.Click(`form.inline-form button[type="submit"]`))
	p.waitFor("the new token, shown once", `!!document.querySelector("#new-token") && document.querySelector("#new-token").value.startsWith("gsk_")`, 15*time.Second)
	e.tokens["dashboard-made"] = p.eval(`document.querySelector("#new-token").value`)
	if status, _ := e.call("GET", "/api/v1/me", "dashboard-made", ""); status != 200 {
		t.Errorf("the token the dashboard created = %d on /api/v1/me; want 200", status)
	}
	p.shot("api-tokens")
	p.do("open the API reference", chromedp.Click(`a[data-nav="api-docs"]`))
	p.waitFor("the API reference", `document.body.innerText.includes("GET /api/v1/repositories") && document.querySelectorAll("section.op").length > 30`, 15*time.Second)
	p.shot("api-docs")

	// A narrow screen: the menu folds away behind a button.
	p.do("narrow the window", chromedp.EmulateViewport(390, 844), chromedp.Navigate(e.apiURL+"/repositories/bitbucket"))
	p.waitFor("the narrow repository list", `!!document.querySelector('tr[data-repository="acme/web"]') && getComputedStyle(document.querySelector("#sidebar")).display === "none"`, 15*time.Second)
	p.shot("repositories-narrow")
	p.do("wide again", chromedp.EmulateViewport(1280, 900))

	// Sign out: the dashboard and the API refuse the browser.
	p.do("sign out", chromedp.Click("#signout"))
	p.waitFor("the sign-in page", `location.pathname === "/signin" && document.body.innerText.includes("You are signed out")`, 15*time.Second)
	p.do("reopen the dashboard", chromedp.Navigate(e.apiURL+"/repositories/bitbucket"))
	p.waitFor("the redirect to sign-in", `location.pathname === "/signin"`, 15*time.Second)
	if got := p.eval(`fetch("/api/v1/me").then(r => String(r.status))`); got != "401" {
		t.Errorf("GET /api/v1/me from the signed-out browser = %s; want 401", got)
	}
}

// TestDashboardEscapesHostileText renders a repository name and a backup error that hold markup
// and checks that they show as text and nothing runs.
func TestDashboardEscapesHostileText(t *testing.T) {
	e := newConnectEnv(t)
	instID, _ := e.connect("acme-corp", "alice")
	ctx := context.Background()
	ten := e.tenantID("acme-corp")
	hostile := `acme/<img src=x onerror="window.__xss=1">`
	id, _, err := e.store.UpsertRepository(ctx, store.Repository{TenantID: ten, InstallationID: uuid.MustParse(instID), ProviderUUID: "{hostile}", FullName: hostile})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.RecordBackupFailure(ctx, ten, id, `<script>window.__xss=2</script> clone failed`, time.Now()); err != nil {
		t.Fatal(err)
	}
	p := &page{t: t, ctx: browsertest.New(t, browsertest.Options{})}
	p.do("open the repository list", chromedp.Navigate(e.loginLink("acme-corp", "/repositories/bitbucket?status=failed")))
	p.waitFor("the hostile row", `document.body.innerText.includes('<img src=x onerror="window.__xss=1">') && document.body.innerText.includes("<script>window.__xss=2</script> clone failed")`, 20*time.Second)
	p.do("open the hostile repository", chromedp.Navigate(e.apiURL+"/repositories/bitbucket/"+id.String()))
	p.waitFor("its page", `document.querySelector("h1") && document.querySelector("h1").textContent.includes("<img")`, 15*time.Second)
	if got := p.eval(`String(window.__xss)`); got != "undefined" {
		t.Fatalf("markup from the API ran in the page (window.__xss = %s)", got)
	}
	if n := p.eval(`String(document.querySelectorAll("main img, main script").length)`); n != "0" {
		t.Errorf("the page holds %s img/script elements made from API text", n)
	}
}

// commitWithoutWebhook adds a commit to branch of a bare repository on disk with git plumbing,
// as a push the provider never reported would.
func commitWithoutWebhook(t *testing.T, bare, branch string) {
	t.Helper()
	git := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"--git-dir", bare}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Dev", "GIT_AUTHOR_EMAIL=dev@example.com", "GIT_COMMITTER_NAME=Dev", "GIT_COMMITTER_EMAIL=dev@example.com")
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	tree := git("", "rev-parse", "refs/heads/"+branch+"^{tree}")
	parent := git("", "rev-parse", "refs/heads/"+branch)
	commit := git("quiet change\n", "commit-tree", tree, "-p", parent)
	git("", "update-ref", "refs/heads/"+branch, commit, parent)
}
