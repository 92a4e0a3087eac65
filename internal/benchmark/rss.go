package benchmark

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sampleInterval is how often the peak RSS of a process tree is sampled.
const sampleInterval = 20 * time.Millisecond

var pageSize = int64(os.Getpagesize())

// treeRSS is the resident memory of pid and all its descendants, read from /proc.
func treeRSS(pid int) int64 {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses; the fields follow the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		children[ppid] = append(children[ppid], p)
	}
	var total int64
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		queue = append(queue, children[p]...)
		statm, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/statm")
		if err != nil {
			continue
		}
		f := strings.Fields(string(statm))
		if len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			total += pages * pageSize
		}
	}
	return total
}

// peakSampler follows the peak RSS of one process tree until stopped.
type peakSampler struct {
	stopOnce sync.Once
	stopCh   chan struct{}
	done     chan int64
}

func samplePeak(pid int) *peakSampler {
	s := &peakSampler{stopCh: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(sampleInterval)
		defer t.Stop()
		for {
			if rss := treeRSS(pid); rss > peak {
				peak = rss
			}
			select {
			case <-s.stopCh:
				s.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends sampling and returns the peak in bytes.
func (s *peakSampler) stop() int64 {
	s.stopOnce.Do(func() { close(s.stopCh) })
	return <-s.done
}

// measured is one timed run of one side.
type measured struct {
	Seconds float64
	PeakRSS int64
}

// runCommand times a command and samples its process tree's peak RSS.
func runCommand(ctx context.Context, env []string, name string, args ...string) (measured, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return measured{}, fmt.Errorf("%s: %w", name, err)
	}
	sampler := samplePeak(cmd.Process.Pid)
	err := cmd.Wait()
	elapsed := time.Since(start)
	peak := sampler.stop()
	if err != nil {
		return measured{}, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return measured{Seconds: elapsed.Seconds(), PeakRSS: peak}, nil
}
