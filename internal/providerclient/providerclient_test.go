package providerclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/providerclient"
	"github.com/gitsec/gitsec/internal/secretbox"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Needs{Postgres: true}))
}

// Two factories on one store are two worker processes. Bitbucket rotates the refresh token on
// every refresh, so once one process refreshed, the other must use the stored token rather than
// its cached one (whose refresh token no longer works); and once the installation is removed,
// neither hands out a client nor writes a refreshed token back.
func TestFactoriesOfTwoProcessesFollowTheStore(t *testing.T) {
	ctx := context.Background()
	emu, err := emulator.Start(ctx, emulator.Options{
		Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		Seed: &emulator.Seed{
			Users:      []emulator.SeedUser{{Username: "alice"}},
			Consumers:  []emulator.Consumer{{Key: "pc-key", Secret: "pc-secret", CallbackURL: "http://127.0.0.1:1/cb"}},
			Workspaces: []emulator.SeedWorkspace{{Slug: "acme", Admins: []string{"alice"}, Repositories: []emulator.SeedRepository{{Slug: "empty"}}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	admin := func(path, body string, out any) {
		t.Helper()
		resp, err := http.Post(emu.URL()+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("POST %s = %d", path, resp.StatusCode)
		}
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
	}
	rejectNextToken := func() { admin("/_emulator/faults", `{"path":"/2.0/user","kind":"4xx","status":401,"count":1}`, nil) }

	st, err := store.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	keyURL, _ := secretbox.NewLocalKeyURL()
	box, err := secretbox.Open(ctx, keyURL)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	admin("/_emulator/tokens", `{"user":"alice","consumer":"pc-key"}`, &tok)
	sealed, err := providerclient.SealToken(ctx, box, &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	ten, err := st.CreateTenant(ctx, "acme-corp")
	if err != nil {
		t.Fatal(err)
	}
	instID, err := st.CreateInstallationWithCredentials(ctx, ten.ID, "bitbucket", sealed)
	if err != nil {
		t.Fatal(err)
	}
	factory := func() *providerclient.Factory {
		return &providerclient.Factory{Store: st, Box: box, APIURL: emu.URL(), GitURL: emu.URL(),
			OAuth:        bitbucket.OAuthConfig("pc-key", "pc-secret", emu.URL()+"/site/oauth2", "http://127.0.0.1:1/cb"),
			RESTLimiters: bitbucket.NewLimiterRegistry(100000, 1000), GitLimiters: bitbucket.NewLimiterRegistry(100000, 1000),
			Logger: slog.New(slog.DiscardHandler)}
	}
	a, b := factory(), factory()
	ca, err := a.Client(ctx, ten.ID, instID)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.Client(ctx, ten.ID, instID)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := b.Client(ctx, ten.ID, instID); err != nil || again != cb {
		t.Fatalf("unchanged credentials: a new client (%v), want the cached one", err)
	}

	// Process A refreshes (Bitbucket rejected its access token) and rotates the refresh token.
	rejectNextToken()
	if _, err := ca.CurrentUser(ctx); err != nil {
		t.Fatalf("A through a forced refresh: %v", err)
	}
	if again, err := a.Client(ctx, ten.ID, instID); err != nil || again != ca {
		t.Fatalf("A after persisting its own refresh: a new client (%v), want the cached one", err)
	}
	// Process B's next client carries the rotated token, so its own forced refresh works.
	cb2, err := b.Client(ctx, ten.ID, instID)
	if err != nil {
		t.Fatal(err)
	}
	if cb2 == cb {
		t.Fatal("B kept the client whose refresh token A's refresh invalidated")
	}
	rejectNextToken()
	if _, err := cb2.CurrentUser(ctx); err != nil {
		t.Fatalf("B through a forced refresh after A's: %v", err)
	}

	// Removed: no client, and a refresh through a client cached before is not written back.
	if err := st.SetInstallationStatus(ctx, ten.ID, instID, domain.InstallationRemoved, "uninstalled"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client(ctx, ten.ID, instID); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("client of a removed installation: %v, want ErrInstallationRemoved", err)
	}
	rejectNextToken()
	if _, err := cb2.CurrentUser(ctx); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("refresh through a client cached before the removal: %v, want ErrInstallationRemoved", err)
	}
	if _, err := cb2.CurrentUser(ctx); !errors.Is(err, store.ErrInstallationRemoved) {
		t.Fatalf("the refused token was used anyway: %v", err)
	}
}
