package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole process to PREFIX.cpu.pprof and, when the
// process ends, a heap profile to PREFIX.heap.pprof, when GITSEC_PROFILE=PREFIX is set (`make
// bench PROFILE=1` sets it for the worker it measures). The returned function finishes both.
func startProfile() (func(), error) {
	prefix := os.Getenv("GITSEC_PROFILE")
	if prefix == "" {
		return func() {}, nil
	}
	cpu, err := os.Create(prefix + ".cpu.pprof")
	if err != nil {
		return nil, fmt.Errorf("GITSEC_PROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		cpu.Close()
		return nil, fmt.Errorf("GITSEC_PROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		heap, err := os.Create(prefix + ".heap.pprof")
		if err != nil {
			fmt.Fprintln(os.Stderr, "gitsec: GITSEC_PROFILE:", err)
			return
		}
		defer heap.Close()
		runtime.GC()
		if err := pprof.Lookup("allocs").WriteTo(heap, 0); err != nil {
			fmt.Fprintln(os.Stderr, "gitsec: GITSEC_PROFILE:", err)
		}
	}, nil
}
