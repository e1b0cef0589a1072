//go:build !unix

package virtual

import "time"

// processCPU is not measured here; benchmarks report zero CPU time.
func processCPU() time.Duration { return 0 }
