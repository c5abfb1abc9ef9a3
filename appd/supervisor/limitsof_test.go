package supervisor

import (
	"testing"

	"github.com/edgeapp/edgeapp/appd/config"
)

// The default pids_max applies only where the tree has the pids
// controller; one written in the file is passed on (NewLeaf then refuses
// it without the controller, naming it).
func TestLimitsOfDefaultPids(t *testing.T) {
	parse := func(limits string) *config.Config {
		c, err := config.Parse("x.toml", "x", []byte("[app]\ncommand = [\"/bin/true\"]\n[limits]\n"+limits+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	def, written := parse(""), parse("pids_max = 64\nmemory_max = \"64MiB\"")
	for _, tc := range []struct {
		c           *config.Config
		controllers []string
		pids        int
		swap        int64
	}{
		{def, []string{"cpu", "memory", "pids"}, config.DefaultPidsMax, -1},
		{def, []string{"cpu", "memory"}, 0, -1},
		{def, nil, 0, -1},
		{written, []string{"memory", "pids"}, 64, 0},
		{written, nil, 64, 0},
	} {
		l := limitsOf(tc.c, tc.controllers)
		if l.PidsMax != tc.pids || l.SwapMax != tc.swap {
			t.Errorf("controllers %v: pids %d swap %d, want %d %d", tc.controllers, l.PidsMax, l.SwapMax, tc.pids, tc.swap)
		}
	}
}
