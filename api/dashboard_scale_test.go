package api_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gitsec/gitsec/internal/browsertest"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/websession"
)

// TestRepositoryListAtAThousandRepositories loads Repositories > Bitbucket for a tenant with
// 1,000 repositories in Chromium: the page shows one page of 50 with the total, pages on, and
// filters on the server. It logs the load times (asserting none: the machines are shared);
// the closing note and docs/dashboard.md quote them.
func TestRepositoryListAtAThousandRepositories(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	instID := f.installationA(t)
	ten := f.tenant(t, "acme")
	for i := 0; i < 1000; i++ {
		ws := fmt.Sprintf("ws-%d", i%10)
		if _, _, err := f.store.UpsertRepository(ctx, store.Repository{TenantID: ten.ID, InstallationID: instID,
			ProviderUUID: fmt.Sprintf("{r-%04d}", i), FullName: fmt.Sprintf("%s/repo-%04d", ws, i), IsPrivate: i%3 != 0}); err != nil {
			t.Fatal(err)
		}
	}
	link, _, err := websession.IssueLoginLink(ctx, f.store, ten.ID, f.srv.URL, "/settings/api-tokens", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &page{t: t, ctx: browsertest.New(t, browsertest.Options{}), poll: 5 * time.Millisecond}
	p.do("sign in", chromedp.Navigate(link))
	p.waitFor("the tokens page", `document.querySelectorAll("tr[data-token]").length >= 1`, 15*time.Second)

	loaded := `document.querySelectorAll("tr[data-repository]").length === 50 && document.querySelector("#repo-count").textContent === "1000 repositories"`
	var cold, warm []time.Duration
	for i := 0; i < 5; i++ {
		// A full page load (shell, hashed assets from cache after the first, two API calls) ...
		start := time.Now()
		p.do("load the repository list", chromedp.Navigate(f.srv.URL+"/repositories/bitbucket"))
		p.waitFor("50 of 1000 repositories", loaded, 20*time.Second)
		cold = append(cold, time.Since(start))
		// ... and an in-app navigation from the sidebar (only the API calls).
		p.do("leave", chromedp.Click(`a[data-nav="api-tokens"]`))
		p.waitFor("the tokens page", `document.querySelectorAll("tr[data-token]").length >= 1`, 15*time.Second)
		start = time.Now()
		p.do("navigate to the list", chromedp.Click(`a[data-nav="bitbucket"]`))
		p.waitFor("50 of 1000 repositories", loaded, 20*time.Second)
		warm = append(warm, time.Since(start))
	}
	median := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	t.Logf("repository list at 1,000 repositories: page load median %s (all %v); in-app navigation median %s (all %v)", median(cold), cold, median(warm), warm)
	p.shot("repositories-1000")

	p.do("next page", chromedp.Click("#next-page"))
	p.waitFor("the second page", `location.search.includes("cursor=") && document.querySelector("tr[data-repository]").dataset.repository === "ws-0/repo-0500"`, 15*time.Second)
	p.do("filter by workspace", chromedp.Navigate(f.srv.URL+"/repositories/bitbucket?workspace=ws-3&q=repo-00"))
	p.waitFor("the filtered list", `document.querySelector("#repo-count").textContent === "10 repositories" && document.querySelectorAll("tr[data-repository]").length === 10`, 15*time.Second)
}
