package main

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"gocloud.dev/blob"

	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/testenv"
)

// The readiness checks /readyz runs, against real dependencies: each one reports "down" on its
// own when its server is unreachable, and all pass when they are up.
func TestReadinessChecksAgainstRealDependencies(t *testing.T) {
	ctx := context.Background()
	dead := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	}

	live, err := store.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	down, err := store.OpenLazy("postgres://u@" + dead() + "/x?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()

	tenv := testenv.Temporal(t)
	liveTemporal, err := client.NewLazyClient(client.Options{HostPort: tenv.HostPort, Namespace: tenv.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer liveTemporal.Close()
	deadTemporal, err := client.NewLazyClient(client.Options{HostPort: dead()})
	if err != nil {
		t.Fatal(err)
	}
	defer deadTemporal.Close()

	liveBucket, err := blob.OpenBucket(ctx, testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	defer liveBucket.Close()
	deadBucket, err := blob.OpenBucket(ctx, "s3://nowhere?endpoint=http://"+dead()+"&use_path_style=true&region=us-east-1")
	if err != nil {
		t.Fatal(err)
	}
	defer deadBucket.Close()

	cases := map[string]struct {
		st *store.Store
		tc client.Client
		bk *blob.Bucket
	}{
		"":         {live, liveTemporal, liveBucket},
		"postgres": {down, liveTemporal, liveBucket},
		"temporal": {live, deadTemporal, liveBucket},
		"storage":  {live, liveTemporal, deadBucket},
	}
	for failing, c := range cases {
		t.Run("down="+failing, func(t *testing.T) {
			for _, chk := range readinessChecks(c.st, c.tc, c.bk) {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := chk.Fn(cctx)
				cancel()
				if (chk.Name == failing) != (err != nil) {
					t.Errorf("check %s: err = %v (failing dependency: %q)", chk.Name, err, failing)
				}
			}
		})
	}
}
