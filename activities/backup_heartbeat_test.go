package activities_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/converter"
	"golang.org/x/time/rate"

	"github.com/gitsec/gitsec/activities"
	"github.com/gitsec/gitsec/internal/archive"
	"github.com/gitsec/gitsec/internal/backupqueue"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/emulator"
	"github.com/gitsec/gitsec/internal/testenv"
	"github.com/gitsec/gitsec/worker"
	"github.com/gitsec/gitsec/workflows"
)

// slowLink forwards TCP connections on a loopback port to target, each direction of each
// connection at most bytesPerSecond: object storage behind a slow network. It returns the
// port's address.
func slowLink(t *testing.T, target string, bytesPerSecond int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	pipe := func(dst, src net.Conn) {
		lim := rate.NewLimiter(rate.Limit(bytesPerSecond), 16<<10)
		buf := make([]byte, 16<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if lim.WaitN(context.Background(), n) != nil {
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				return
			}
		}
	}
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			track(client)
			track(server)
			go pipe(server, client)
			go pipe(client, server)
		}
	}()
	return ln.Addr().String()
}

// slowStorage opens the S3 bucket at storageURL through a slowLink to its endpoint.
func slowStorage(t *testing.T, storageURL string, bytesPerSecond int) *archive.Store {
	t.Helper()
	u, err := url.Parse(storageURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	endpoint, err := url.Parse(q.Get("endpoint"))
	if err != nil || endpoint.Host == "" {
		t.Fatalf("storage URL %s has no endpoint", storageURL)
	}
	endpoint.Host = slowLink(t, endpoint.Host, bytesPerSecond)
	q.Set("endpoint", endpoint.String())
	u.RawQuery = q.Encode()
	st, err := archive.Open(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// heartbeatWatch collects the heartbeat details of the repository's running StageBackup
// activities, as Temporal shows them, until stop is called.
func (e *backupEnv) heartbeatWatch(slug string) (stop func() []activities.BackupProgress) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	id := workflows.BackupWorkflowID(backupqueue.Target(e.repos[slug]))
	var seen []activities.BackupProgress
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			desc, err := e.temporal.DescribeWorkflowExecution(ctx, id, "")
			if err == nil {
				for _, pa := range desc.GetPendingActivities() {
					if pa.GetActivityType().GetName() != workflows.StageBackupActivity || pa.GetHeartbeatDetails() == nil {
						continue
					}
					var p activities.BackupProgress
					if converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &p) == nil {
						seen = append(seen, p)
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return func() []activities.BackupProgress {
		cancel()
		<-done
		return seen
	}
}

// sawTransfer reports whether a heartbeat showed op under way: bytes of a file moved, the file
// not done yet. (An upload's bytes count what the storage client took: S3 buffers parts, so
// the count can reach the size while the part is still on the wire.)
func sawTransfer(seen []activities.BackupProgress, op string) bool {
	for _, p := range seen {
		if tr := p.Transfer; tr != nil && tr.Op == op && !tr.Done && tr.Bytes > 0 && tr.Bytes <= tr.Size {
			return true
		}
	}
	return false
}

// transfers lists the transfer events among heartbeats, for failure messages.
func transfers(seen []activities.BackupProgress) []archive.TransferEvent {
	var out []archive.TransferEvent
	for _, p := range seen {
		if p.Transfer != nil {
			out = append(out, *p.Transfer)
		}
	}
	return out
}

// TestBackupHeartbeatsThroughSlowTransfers: storage sits behind a slow link, so uploading the
// first clone's pack and, later, downloading it to rebuild a lost mirror each take several
// heartbeat timeouts. The staging activity heartbeats from the byte streams (bytes done of
// the file's size in its details) and completes on its first attempt both times: Temporal
// never starts a second attempt beside a transfer that is making progress.
func TestBackupHeartbeatsThroughSlowTransfers(t *testing.T) {
	const (
		blobSize  = 2 << 20
		linkSpeed = 96 << 10 // bytes per second: about 20 s per direction for the pack
	)
	storageURL := testenv.S3(t)
	slow := slowStorage(t, storageURL, linkSpeed)
	e := newBackupEnvWith(t, storageURL, func(a *worker.Activities) { a.Backups.Archive, a.Sweeps.Archive = slow, slow },
		emulator.SeedRepository{Slug: "assets", Generate: &emulator.Generate{Commits: 2, BinaryBytes: blobSize}})
	e.settings.HeartbeatTimeout = 8 * time.Second

	stop := e.heartbeatWatch("assets")
	e.backup("assets", workflows.BackupRequest{Trigger: domain.TriggerInitial})
	seen := stop()
	runs := e.stageActivities("assets")
	if len(runs) != 1 || runs[0].attempt != 1 || runs[0].outcome != enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED {
		t.Fatalf("StageBackup activities = %+v, want one that completed on its first attempt", runs)
	}
	if !sawTransfer(seen, "upload") {
		t.Fatalf("no heartbeat showed the upload under way; saw %d heartbeats, transfers %+v", len(seen), transfers(seen))
	}
	snaps := e.snapshots("assets")
	if len(snaps) != 1 || snaps[0].TotalBytes < blobSize {
		t.Fatalf("snapshots = %+v, want one holding the blob", snaps)
	}

	// The worker lost its mirror: the next run downloads the pack through the slow link.
	if err := os.RemoveAll(e.mirrors); err != nil {
		t.Fatal(err)
	}
	e.emuJSON("POST", "/_emulator/repositories/acme/assets/push", `{"commits":1}`, nil)
	stop = e.heartbeatWatch("assets")
	e.backup("assets")
	seen = stop()
	runs = e.stageActivities("assets")
	if len(runs) != 1 || runs[0].attempt != 1 || runs[0].outcome != enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED {
		t.Fatalf("StageBackup activities of the hydrating run = %+v, want one that completed on its first attempt", runs)
	}
	if !sawTransfer(seen, "download") {
		t.Fatalf("no heartbeat showed the download under way; saw %d heartbeats, transfers %+v", len(seen), transfers(seen))
	}
	snaps = e.snapshots("assets")
	if len(snaps) != 2 || snaps[0].BytesUploaded >= blobSize {
		t.Fatalf("snapshots after hydrating = %+v, want an incremental second one", snaps)
	}
	e.restoreAndVerify("assets", snaps[0].ID)
}
