package s3server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"
)

func versitygwBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
	bin := filepath.Join(dir, "bin", "versitygw")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("versitygw missing (run scripts/install-tools.sh): %v", err)
	}
	return bin
}

func startServer(t *testing.T, dir string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Binary: versitygwBinary(t), Dir: dir, AccessKey: "testaccess", SecretKey: "testsecret-0123456789"})
	if err != nil {
		t.Fatalf("start s3 server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop s3 server: %v", err)
		}
	})
	return s
}

// openBucket opens the bucket the way GitSec does: through the gocloud URL, with credentials from
// the environment.
func openBucket(t *testing.T, s *Server, name string) *blob.Bucket {
	t.Helper()
	for _, kv := range s.AWSEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	b, err := blob.OpenBucket(context.Background(), s.BucketURL(name))
	if err != nil {
		t.Fatalf("open %s: %v", s.BucketURL(name), err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestBucketRoundTripAndRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "buckets")
	ctx := context.Background()
	s := startServer(t, dir)
	if err := s.CreateBucket(ctx, "backups"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBucket(ctx, "backups"); err != nil {
		t.Fatalf("creating an existing bucket again: %v", err)
	}
	want := "s3://backups?endpoint=" + s.Endpoint() + "&use_path_style=true&region=us-east-1"
	if got := s.BucketURL("backups"); got != want {
		t.Fatalf("BucketURL = %s, want %s", got, want)
	}

	b := openBucket(t, s, "backups")
	if err := b.WriteAll(ctx, "repos/a/pack-1.pack", []byte("pack bytes"), nil); err != nil {
		t.Fatal(err)
	}
	got, err := b.ReadAll(ctx, "repos/a/pack-1.pack")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "pack bytes" {
		t.Fatalf("read back %q", got)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	again := startServer(t, dir)
	b2 := openBucket(t, again, "backups")
	got, err = b2.ReadAll(ctx, "repos/a/pack-1.pack")
	if err != nil {
		t.Fatalf("read after restart: %v", err)
	}
	if string(got) != "pack bytes" {
		t.Fatalf("read back after restart %q", got)
	}
}

// Snapshot manifests rely on conditional writes: the second writer of a key must lose.
func TestIfNotExistRejectsSecondWrite(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, filepath.Join(t.TempDir(), "buckets"))
	if err := s.CreateBucket(ctx, "manifests"); err != nil {
		t.Fatal(err)
	}
	b := openBucket(t, s, "manifests")
	opts := &blob.WriterOptions{IfNotExist: true}
	if err := b.WriteAll(ctx, "snap/manifest.json", []byte(`{"first":true}`), opts); err != nil {
		t.Fatalf("first conditional write: %v", err)
	}
	err := b.WriteAll(ctx, "snap/manifest.json", []byte(`{"second":true}`), opts)
	if gcerrors.Code(err) != gcerrors.FailedPrecondition {
		t.Fatalf("second conditional write: code %v (err %v), want FailedPrecondition", gcerrors.Code(err), err)
	}
	got, err := b.ReadAll(ctx, "snap/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"first":true}` {
		t.Fatalf("manifest overwritten: %s", got)
	}
}

func TestWrongCredentialsAreRejected(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, filepath.Join(t.TempDir(), "buckets"))
	client := s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider("testaccess", "wrong-secret", ""),
	})
	if _, err := client.ListBuckets(ctx, &s3.ListBucketsInput{}); err == nil {
		t.Fatal("request signed with a wrong secret succeeded")
	}
}

func TestMissingBinaryFails(t *testing.T) {
	_, err := Start(context.Background(), Options{Binary: filepath.Join(t.TempDir(), "nope"), Dir: t.TempDir(), AccessKey: "a", SecretKey: "b"})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v", err)
	}
}
