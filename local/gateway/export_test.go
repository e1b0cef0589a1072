package gateway

import "time"

// SetDrainGrace overrides how long a client's departure mid-response leaves
// the upstream to end, so a test of that path does not depend on how fast
// the machine is. Call it before the gateway serves.
func SetDrainGrace(g *Gateway, d time.Duration) { g.drainGrace = d }
