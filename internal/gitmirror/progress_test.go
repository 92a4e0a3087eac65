package gitmirror

import (
	"testing"
	"time"
)

func TestProgressReporterParsesSidebandAndRateLimits(t *testing.T) {
	var got []Progress
	p := newProgressReporter(func(pr Progress) { got = append(got, pr) })
	clock := time.Unix(0, 0)
	p.now = func() time.Time { return clock }

	p.Write([]byte("Enumerating objects: 20, done.\nCounting objects:  10% (2/20)\rCounting"))
	p.Write([]byte(" objects:  50% (10/20)\rCounting objects: 100% (20/20), done.\n"))
	if len(got) != 2 {
		t.Fatalf("callbacks = %+v, want one per phase change and none within the interval", got)
	}
	if got[1].Phase != "Counting objects" || got[1].Objects != 2 || got[1].TotalObjects != 20 {
		t.Errorf("second callback = %+v", got[1])
	}
	clock = clock.Add(2 * ProgressInterval)
	p.Write([]byte("Total 20 (delta 3), reused 0 (delta 0), pack-reused 0\n"))
	p.addBytes(100)
	p.addBytes(50)
	final := p.finish(150)
	if final.Phase != "Done" || final.Objects != 20 || final.Bytes != 150 {
		t.Fatalf("final = %+v", final)
	}
	if got[len(got)-1] != final {
		t.Fatalf("last callback %+v is not the final state %+v", got[len(got)-1], final)
	}
	if got[len(got)-2].Phase != "Receiving objects" {
		t.Errorf("bytes did not switch the phase to receiving: %+v", got)
	}
}

func TestProgressReporterReadsGitCLIBytes(t *testing.T) {
	var got []Progress
	p := newProgressReporter(func(pr Progress) { got = append(got, pr) })
	p.bytesFromText = true
	p.Write([]byte("Receiving objects:  45% (9/20), 1.50 MiB | 2.00 MiB/s\r"))
	if len(got) != 1 || got[0].Phase != "Receiving objects" || got[0].Objects != 9 || got[0].Bytes != 3<<19 {
		t.Fatalf("callbacks = %+v, want receiving 9/20 at 1.5 MiB", got)
	}
	if final := p.finish(1572999); final.Bytes != 1572999 {
		t.Fatalf("final = %+v, want the exact pack size", final)
	}
}
