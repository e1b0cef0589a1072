//go:build unix

package virtual

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the process has used, user and system: on a shared machine a
// run's wall time says more about the neighbours than about the run.
func processCPU() time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
