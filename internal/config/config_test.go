package config

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) Getenv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func validEnv() map[string]string {
	return map[string]string{
		"GITSEC_DATABASE_URL":    "postgres://u:hunter2@127.0.0.1:5432/gitsec?sslmode=disable",
		"GITSEC_SECRETS_KEY_URL": "base64key://smGbjm71Nxd1Ig5FS0wj9SlbzAIrnolCz9bQQ6uAhl4=",
	}
}

func TestLoadDefaults(t *testing.T) {
	c, err := LoadFrom(envOf(validEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.TemporalNamespace != "default" || !strings.HasSuffix(c.StorageURL, "/.gitsec/storage?create_dir=true") {
		t.Fatalf("unexpected defaults: http=%q namespace=%q storage=%q", c.HTTPAddr, c.TemporalNamespace, c.StorageURL)
	}
	if c.HousekeepingEvery.String() != "1h0m0s" {
		t.Fatalf("housekeeping interval = %v", c.HousekeepingEvery)
	}
	if c.MetricsAddr != "" {
		t.Fatalf("metrics address = %q, want the worker's metrics off by default", c.MetricsAddr)
	}
	env := validEnv()
	env["GITSEC_METRICS_ADDR"] = "0.0.0.0:9464"
	if c, err := LoadFrom(envOf(env)); err != nil || c.MetricsAddr != "0.0.0.0:9464" {
		t.Fatalf("GITSEC_METRICS_ADDR=0.0.0.0:9464 gave %q, %v", c.MetricsAddr, err)
	}
	if c.SweepEvery != 24*time.Hour || c.SweepConcurrency != 8 || c.MirrorMaxBytes != 0 || c.MirrorCleanupEvery != time.Hour {
		t.Fatalf("sweep every %v, concurrency %d, mirror budget %d, cleanup every %v", c.SweepEvery, c.SweepConcurrency, c.MirrorMaxBytes, c.MirrorCleanupEvery)
	}
}

func TestLoadRejectsBadValuesNamingTheVariable(t *testing.T) {
	cases := []struct {
		name, value, want string
	}{
		{"GITSEC_DATABASE_URL", "mysql://x@y/z", "GITSEC_DATABASE_URL: must be a postgres:// URL"},
		{"GITSEC_DATABASE_URL", "", "GITSEC_DATABASE_URL: is required"},
		{"GITSEC_TEMPORAL_ADDRESS", "localhost", "GITSEC_TEMPORAL_ADDRESS: must be host:port"},
		{"GITSEC_HTTP_ADDR", "127.0.0.1:99999", "GITSEC_HTTP_ADDR: port \"99999\""},
		{"GITSEC_METRICS_ADDR", "9464", "GITSEC_METRICS_ADDR: must be host:port"},
		{"GITSEC_PUBLIC_URL", "ftp://x", "GITSEC_PUBLIC_URL: must be an absolute http(s) URL"},
		{"GITSEC_STORAGE_URL", "mem://", "GITSEC_STORAGE_URL: scheme \"mem\" is not supported"},
		{"GITSEC_SECRETS_KEY_URL", "plaintextsecret", "GITSEC_SECRETS_KEY_URL: must be a secrets keeper URL"},
		{"GITSEC_LOG_LEVEL", "loud", "GITSEC_LOG_LEVEL: must be debug, info, warn or error"},
		{"GITSEC_LOG_FORMAT", "xml", "GITSEC_LOG_FORMAT: must be one of text, json"},
		{"GITSEC_HOUSEKEEPING_INTERVAL", "-5m", "GITSEC_HOUSEKEEPING_INTERVAL: must be a positive duration"},
		{"GITSEC_MIRROR_MAX_BYTES", "-1", "GITSEC_MIRROR_MAX_BYTES: must be a whole number of bytes"},
		{"GITSEC_MIRROR_MAX_BYTES", "10GB", "GITSEC_MIRROR_MAX_BYTES: must be a whole number of bytes"},
		{"GITSEC_SWEEP_INTERVAL", "daily", "GITSEC_SWEEP_INTERVAL: must be a positive duration"},
		{"GITSEC_SWEEP_CONCURRENCY", "0", "GITSEC_SWEEP_CONCURRENCY: must be a positive integer"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			env := validEnv()
			env[tc.name] = tc.value
			_, err := LoadFrom(envOf(env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestErrorsNeverEchoSecrets(t *testing.T) {
	env := validEnv()
	env["GITSEC_DATABASE_URL"] = "mysql://u:hunter2@db/x"
	env["GITSEC_SECRETS_KEY_URL"] = "nosuch://topsecretkey"
	_, err := LoadFrom(envOf(env))
	if err == nil {
		t.Fatal("expected an error")
	}
	for _, secret := range []string{"hunter2", "topsecretkey"} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error leaks a secret: %v", err)
		}
	}
}

func TestSecretsKeyRequiredOnlyWhereUsed(t *testing.T) {
	env := validEnv()
	delete(env, "GITSEC_SECRETS_KEY_URL")
	c, err := LoadFrom(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RequireSecretsKey(); err == nil || !strings.Contains(err.Error(), "GITSEC_SECRETS_KEY_URL") {
		t.Fatalf("RequireSecretsKey = %v", err)
	}
}

// Every GITSEC_ variable the code reads must be in the README configuration table, and every
// variable read through os.Getenv/LookupEnv must be declared in Variables.
func TestEveryVariableIsDocumentedInREADME(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	declared := map[string]bool{}
	for _, v := range Variables {
		declared[v.Name] = true
		if !strings.Contains(string(readme), "| `"+v.Name+"` |") {
			t.Errorf("%s is read by the code but missing from the README configuration table", v.Name)
		}
	}
	used := regexp.MustCompile(`"(GITSEC_[A-Z0-9_]+)"`)
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == ".gitsec") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range used.FindAllStringSubmatch(string(src), -1) {
			name := m[1]
			if strings.HasPrefix(name, "GITSEC_TEST_") {
				continue // test-harness knobs are documented in docs/testing.md
			}
			if !declared[name] && !strings.Contains(string(readme), "`"+name+"`") {
				t.Errorf("%s: %s is read but neither declared in config.Variables nor documented in README.md", path, name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNormalizeStorageURL(t *testing.T) {
	wd, _ := os.Getwd()
	cases := map[string]string{
		"file://.gitsec/storage":     "file://" + filepath.ToSlash(filepath.Join(wd, ".gitsec/storage")) + "?create_dir=true",
		"file:///var/backups":        "file:///var/backups?create_dir=true",
		"s3://bkt?region=us-east-1":  "s3://bkt?region=us-east-1",
		"file:///x?create_dir=false": "file:///x?create_dir=false",
	}
	for in, want := range cases {
		got, err := NormalizeStorageURL(in)
		if err != nil || got != want {
			t.Errorf("NormalizeStorageURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"s3://", "http://x", "file://"} {
		if _, err := NormalizeStorageURL(bad); err == nil {
			t.Errorf("NormalizeStorageURL(%q) accepted", bad)
		}
	}
}
