package deployment

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func loadProject(t *testing.T) *types.Project {
	t.Helper()
	root := repoRoot(t)
	env, err := dotenv.Read(filepath.Join(root, ".env.example"))
	if err != nil {
		t.Fatalf("read .env.example: %v", err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml")}},
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName("gitsec", true) })
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func TestComposeServicesAndWiring(t *testing.T) {
	p := loadProject(t)
	for _, name := range []string{"postgres", "temporal", "temporal-ui", "minio", "minio-bucket", "gitsec-migrate", "gitsec-api", "gitsec-worker"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %q is missing", name)
		}
	}
	for _, name := range []string{"gitsec-api", "gitsec-worker"} {
		svc := p.Services[name]
		env := svc.Environment
		get := func(k string) string {
			if v, ok := env[k]; ok && v != nil {
				return *v
			}
			return ""
		}
		if !strings.Contains(get("GITSEC_DATABASE_URL"), "@postgres:5432/") {
			t.Errorf("%s: GITSEC_DATABASE_URL does not point at the postgres service: %q", name, get("GITSEC_DATABASE_URL"))
		}
		if get("GITSEC_TEMPORAL_ADDRESS") != "temporal:7233" {
			t.Errorf("%s: GITSEC_TEMPORAL_ADDRESS = %q, want temporal:7233", name, get("GITSEC_TEMPORAL_ADDRESS"))
		}
		if !strings.HasPrefix(get("GITSEC_STORAGE_URL"), "s3://") || !strings.Contains(get("GITSEC_STORAGE_URL"), "endpoint=http://minio:9000") {
			t.Errorf("%s: GITSEC_STORAGE_URL does not point at minio: %q", name, get("GITSEC_STORAGE_URL"))
		}
		if !strings.HasPrefix(get("GITSEC_SECRETS_KEY_URL"), "base64key://") {
			t.Errorf("%s: GITSEC_SECRETS_KEY_URL not taken from the env file", name)
		}
		if svc.Build == nil {
			t.Errorf("%s is not built from the repository's Dockerfile", name)
		}
		if svc.HealthCheck == nil || len(svc.HealthCheck.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
		for _, dep := range []string{"gitsec-migrate", "temporal"} {
			if _, ok := svc.DependsOn[dep]; !ok {
				t.Errorf("%s does not depend on %s", name, dep)
			}
		}
		if svc.DependsOn["temporal"].Condition != types.ServiceConditionHealthy {
			t.Errorf("%s starts before temporal is healthy", name)
		}
		if svc.DependsOn["gitsec-migrate"].Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s starts before migrations completed", name)
		}
	}
	if !strings.Contains(strings.Join(p.Services["gitsec-api"].HealthCheck.Test, " "), "/readyz") {
		t.Error("gitsec-api healthcheck does not use /readyz")
	}
	for _, name := range []string{"postgres", "temporal", "minio"} {
		if hc := p.Services[name].HealthCheck; hc == nil || len(hc.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
	}
	if c := p.Services["temporal"].DependsOn["postgres"].Condition; c != types.ServiceConditionHealthy {
		t.Errorf("temporal depends on postgres with condition %q, want healthy", c)
	}
	if got := p.Services["temporal"].Environment["POSTGRES_SEEDS"]; got == nil || *got != "postgres" {
		t.Error("temporal is not configured to use the postgres service")
	}
}

func TestDockerfileRunsAsNonRootWithGit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.Count(s, "FROM ") < 2 {
		t.Error("Dockerfile is not multi-stage")
	}
	for _, want := range []string{"git", "ca-certificates", "USER gitsec"} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

func TestEnvFileIsNotCommitted(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "/.env") {
		t.Error(".env is not git-ignored")
	}
}
