package cgroup_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"syscall"

	"github.com/edgeapp/edgeapp/appd/cgroup"
)

// How appd uses the package: open the delegated tree once, then per worker
// a leaf, a child born in it, OOM kills seen as they happen, and Kill +
// Remove when the worker is gone.
func Example() {
	log := slog.Default()
	tree, err := cgroup.Open(log)
	if errors.Is(err, cgroup.ErrNotDelegated) {
		log.Warn("workers run without limits", "reason", err)
		return
	}
	if err != nil {
		log.Error("cgroup tree", "err", err)
		return
	}
	defer tree.Close()

	leaf, err := tree.NewLeaf("w0-1", cgroup.Limits{MemoryMax: 512 << 20, MemoryHigh: 400 << 20, SwapMax: -1, CPUMax: 1.0, PidsMax: 128})
	if err != nil {
		log.Error("worker leaf", "err", err)
		return
	}
	cmd := exec.Command("/usr/bin/my-worker")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: leaf.FD()}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		leaf.Remove()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ev := range leaf.WaitEvents(ctx) {
			if ev.OOMKill > 0 {
				st, _ := leaf.Stats()
				log.Error("worker OOM-killed", "peak", st.MemoryPeak)
			}
		}
	}()
	cmd.Wait()
	cancel()
	leaf.Kill() // whatever the worker left behind, re-parented or not
	leaf.Remove()
}
