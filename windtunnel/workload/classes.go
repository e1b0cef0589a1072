package workload

import (
	"fmt"
	"math/rand/v2"
)

// streamClasses keys the random stream that assigns classes, apart from every other stream
// of a seed, so assigning classes changes nothing else about a workload.
const streamClasses = 0xc1a55e5

// WithClasses gives every request of g one of classes (DefaultClasses when nil), drawn by a
// seeded rule in proportion to their shares: its class name, objectives, objective name,
// priority and tenant. What the request asks for (prompt, output, arrival) is unchanged. It
// is how workloads that carry no objectives of their own (shared prefix, multi-turn, agentic)
// are judged by the reference mix's classes; replayed traces assign them as they replay
// (TraceOptions.Classes), with the classes' tenants.
func WithClasses(g Generator, seed uint64, classes []Class) (Generator, error) {
	if classes == nil {
		classes = DefaultClasses()
	}
	total := 0.0
	for _, c := range classes {
		if !(c.Share > 0) || c.Name == "" {
			return nil, fmt.Errorf("workload: class %q: a name and a positive share are required", c.Name)
		}
		total += c.Share
	}
	if len(classes) == 0 {
		return nil, fmt.Errorf("workload: no classes to assign")
	}
	return &classed{g: g, classes: classes, total: total, rng: rand.New(rand.NewPCG(seed, streamClasses))}, nil
}

type classed struct {
	g       Generator
	classes []Class
	total   float64
	rng     *rand.Rand
}

func (c *classed) Next() (Request, bool) {
	r, ok := c.g.Next()
	if !ok {
		return r, false
	}
	x := c.rng.Float64() * c.total
	cl := c.classes[len(c.classes)-1]
	for _, k := range c.classes {
		if x < k.Share {
			cl = k
			break
		}
		x -= k.Share
	}
	r.Class, r.SLOTTFT, r.SLOTPOT, r.Priority = cl.Name, cl.SLOTTFT, cl.SLOTPOT, cl.Priority
	r.Objective = cl.Objective
	if r.Objective == "" {
		r.Objective = cl.Name
	}
	r.FairnessID = cl.Name
	return r, true
}
