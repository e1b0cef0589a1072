package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
)

// PluginConfig names a plugin and its parameters.
type PluginConfig struct {
	Name string `json:"name"`
	// Weight applies to scorers only.
	Weight *float64 `json:"weight,omitempty"`
	// Args are the plugin's parameters; unknown ones are errors.
	Args json.RawMessage `json:"args,omitempty"`
}

// ProfileConfig is a profile as written in configuration.
type ProfileConfig struct {
	Name    string         `json:"name"`
	Filters []PluginConfig `json:"filters,omitempty"`
	Scorers []PluginConfig `json:"scorers"`
	Picker  PluginConfig   `json:"picker"`
}

// Factory builds a plugin from its arguments and the handle. The result must implement
// Filter, Scorer or Picker, as its place in the profile requires.
type Factory func(args json.RawMessage, h Handle) (any, error)

// Typed returns a factory whose arguments are decoded strictly into A (unknown keys are
// errors) before build runs; A's zero value is used when no arguments are given.
func Typed[A any](build func(args A, h Handle) (any, error)) Factory {
	return func(raw json.RawMessage, h Handle) (any, error) {
		var a A
		if err := decodeArgs(raw, &a); err != nil {
			return nil, err
		}
		return build(a, h)
	}
}

// noArgs is the factory of a plugin without parameters.
func noArgs(build func(h Handle) any) Factory {
	return func(raw json.RawMessage, h Handle) (any, error) {
		if err := decodeArgs(raw, &struct{}{}); err != nil {
			return nil, err
		}
		return build(h), nil
	}
}

// Arguments of the built-in plugins that take any.
type (
	PrefixArgs struct {
		// CapacityBlocks is the blocks remembered per replica that reports no KV capacity.
		CapacityBlocks int `json:"capacityBlocks"`
	}
	SessionAffinityArgs struct {
		Capacity int `json:"capacity"` // sessions remembered
	}
)

// Registry maps plugin names to factories.
type Registry map[string]Factory

// DefaultRegistry returns a registry of the built-in plugins.
func DefaultRegistry() Registry {
	r := Registry{
		"load":             noArgs(func(Handle) any { return LoadScorer{} }),
		"queue":            noArgs(func(Handle) any { return QueueScorer{} }),
		"kv-usage":         noArgs(func(Handle) any { return KVUsageScorer{} }),
		"running-requests": noArgs(func(Handle) any { return RunningScorer{} }),
		"inflight-load":    noArgs(func(Handle) any { return InflightLoadScorer{} }),
		"max-score": Typed(func(a MaxScoreArgs, h Handle) (any, error) {
			p, err := NewExploringMaxScorePicker(h.Seed, a.Explore)
			if err != nil {
				return nil, fmt.Errorf("args: %w", err)
			}
			return p, nil
		}),
		"slo": Typed(func(a SLOArgs, h Handle) (any, error) {
			p, err := NewSLOPicker(a, h.Seed)
			if err != nil {
				return nil, fmt.Errorf("args: %w", err)
			}
			return p, nil
		}),
		"round-robin":     noArgs(func(Handle) any { return &RoundRobinPicker{} }),
		"random":          noArgs(func(h Handle) any { return NewRandomPicker(h.Seed) }),
		"weighted-random": noArgs(func(h Handle) any { return NewWeightedRandomPicker(h.Seed) }),
		"prefix": Typed(func(a PrefixArgs, h Handle) (any, error) {
			if a.CapacityBlocks < 0 {
				return nil, fmt.Errorf("args: capacityBlocks %d must not be negative", a.CapacityBlocks)
			}
			return NewPrefixScorer(a.CapacityBlocks, h.Pool), nil
		}),
		"session-affinity": Typed(func(a SessionAffinityArgs, _ Handle) (any, error) {
			if a.Capacity < 0 {
				return nil, fmt.Errorf("args: capacity %d must not be negative", a.Capacity)
			}
			return NewSessionAffinityScorer(a.Capacity), nil
		}),
		"hotspot-guard": func(raw json.RawMessage, _ Handle) (any, error) {
			g := HotspotGuard{Factor: DefaultHotspotFactor, Slack: DefaultHotspotSlack}
			if err := decodeArgs(raw, &g); err != nil {
				return nil, err
			}
			if !(g.Factor >= 1) || g.Slack < 0 {
				return nil, fmt.Errorf("args: factor %v must be at least 1 and slack %v not negative", g.Factor, g.Slack)
			}
			return g, nil
		},
		"room-filter": func(raw json.RawMessage, _ Handle) (any, error) {
			var f RoomFilter
			if err := decodeArgs(raw, &f); err != nil {
				return nil, err
			}
			if !(f.QueuePerReplica > 0) || !(f.StepShare >= 0) {
				return nil, fmt.Errorf("args: queuePerReplica %v must be positive and stepShare %v not negative", f.QueuePerReplica, f.StepShare)
			}
			return f, nil
		},
	}
	maps.Copy(r, llmdPlugins()) // prefix-affinity, token-load, active-requests, slo-tier, latency
	return r
}

// DefaultProfileConfig is the profile used when configuration names none.
func DefaultProfileConfig() ProfileConfig {
	one := 1.0
	return ProfileConfig{
		Name:    "default",
		Scorers: []PluginConfig{{Name: "load", Weight: &one}},
		Picker:  PluginConfig{Name: "max-score"},
	}
}

// BuiltinProfiles are named profiles for comparisons:
//   - "default": load only;
//   - "round-robin": the Kubernetes Service baseline;
//   - "random";
//   - "llm-d": llm-d's legacy default scorer weights, prefix 3, queue 2, KV usage 2;
//   - "prefix-load": prefix affinity weighed against load;
//   - "prefix-guarded": prefix-load behind the hot-spot guard;
//   - "llm-d-token": llm-d's token-aware routing for prefill-bound traffic ("sticky until
//     saturated"): the prefix-affinity filter (threshold 0.8, release at an 18 s gap in TTFT
//     estimated from uncached tokens in flight over the class's peak prefill throughput), then
//     the token-load scorer, max-score picker;
//   - "llm-d-active": the same for decode-bound traffic, with the active-requests scorer;
//   - "augur": Augur's policy, the SLO picker on predicted latency (best-fit with a margin,
//     sacrificing lost requests); the request's own TTFT and TPOT judged by the upper
//     quantile, the running streams' TPOT bound by the mean (see SLOPicker); the prefix
//     record feeds the predictions, and the load scorer orders decisions only when no
//     predictions exist; 1% of decisions explore;
//   - "llm-d-predicted": llm-d's predicted-latency pipeline: the prefix-affinity filter
//     releasing on a 5 s gap in predicted TTFT, the slo-tier filter (feasible replicas, 1% of
//     decisions the violating ones), the latency scorer packing (strategy least), and the
//     weighted random picker. It needs the scheduler's predictor; without one it keeps every
//     replica and scores by KV usage, queue and prefix match.
//
// The llm-d profiles list the prefix plugin as a scorer of weight 0, for the prefix match
// their filters and scorers read. Their peak prefill throughput is DefaultPeakPrefillThroughput
// for every class; WithPeakPrefillThroughput gives them calibrated values.
func BuiltinProfiles() map[string]ProfileConfig {
	w := func(v float64) *float64 { return &v }
	profiles := map[string]ProfileConfig{
		"default":     DefaultProfileConfig(),
		"round-robin": {Name: "round-robin", Picker: PluginConfig{Name: "round-robin"}},
		"random":      {Name: "random", Picker: PluginConfig{Name: "random"}},
		"llm-d": {Name: "llm-d", Scorers: []PluginConfig{{Name: "prefix", Weight: w(3)}, {Name: "queue", Weight: w(2)}, {Name: "kv-usage", Weight: w(2)}},
			Picker: PluginConfig{Name: "max-score"}},
		"prefix-load": {Name: "prefix-load", Scorers: []PluginConfig{{Name: "prefix", Weight: w(3)}, {Name: "load", Weight: w(2)}},
			Picker: PluginConfig{Name: "max-score"}},
		"augur": {Name: "augur", Scorers: []PluginConfig{{Name: "prefix", Weight: w(0)}, {Name: "load", Weight: w(1)}},
			Picker: PluginConfig{Name: "slo", Args: json.RawMessage(`{"explore":0.01}`)}},
		"prefix-guarded": {Name: "prefix-guarded", Filters: []PluginConfig{{Name: "hotspot-guard"}},
			Scorers: []PluginConfig{{Name: "prefix", Weight: w(3)}, {Name: "load", Weight: w(2)}},
			Picker:  PluginConfig{Name: "max-score"}},
	}
	maps.Copy(profiles, llmdProfiles())
	return profiles
}

// Build constructs the profile pc describes. previous, when not nil, is the profile being
// replaced on a configuration reload: its plugins are reused where their configuration is
// unchanged, so learned state (the prefix record, sessions) survives the reload.
func (r Registry) Build(pc ProfileConfig, h Handle, previous *Profile) (*Profile, error) {
	prof := &Profile{Name: pc.Name, instances: map[string]any{}}
	for _, fc := range pc.Filters {
		p, err := r.build(prof, "filter", fc, h, previous)
		if err != nil {
			return nil, err
		}
		f, ok := p.(Filter)
		if !ok {
			return nil, fmt.Errorf("profile %q: plugin %q is not a filter", pc.Name, fc.Name)
		}
		prof.Filters = append(prof.Filters, f)
	}
	for _, sc := range pc.Scorers {
		p, err := r.build(prof, "scorer", sc, h, previous)
		if err != nil {
			return nil, err
		}
		s, ok := p.(Scorer)
		if !ok {
			return nil, fmt.Errorf("profile %q: plugin %q is not a scorer", pc.Name, sc.Name)
		}
		w := 1.0
		if sc.Weight != nil {
			w = *sc.Weight
		}
		if !(w >= 0 && w <= 1e6) {
			return nil, fmt.Errorf("profile %q: scorer %q: weight %v must be between 0 and 1e6", pc.Name, sc.Name, w)
		}
		prof.Scorers = append(prof.Scorers, WeightedScorer{Scorer: s, Weight: w})
	}
	if pc.Picker.Name == "" {
		return nil, fmt.Errorf("profile %q: picker is required", pc.Name)
	}
	p, err := r.build(prof, "picker", pc.Picker, h, previous)
	if err != nil {
		return nil, err
	}
	pk, ok := p.(Picker)
	if !ok {
		return nil, fmt.Errorf("profile %q: plugin %q is not a picker", pc.Name, pc.Picker.Name)
	}
	prof.Picker = pk
	return prof, nil
}

func (r Registry) build(prof *Profile, role string, c PluginConfig, h Handle, previous *Profile) (any, error) {
	f, ok := r[c.Name]
	if !ok {
		return nil, fmt.Errorf("profile %q: unknown %s plugin %q", prof.Name, role, c.Name)
	}
	if c.Weight != nil && role != "scorer" {
		return nil, fmt.Errorf("profile %q: %s %q: weight applies to scorers only", prof.Name, role, c.Name)
	}
	key := role + "/" + c.Name + "/" + string(bytes.TrimSpace(c.Args))
	if previous != nil {
		if p, ok := previous.instances[key]; ok {
			prof.instances[key] = p
			return p, nil
		}
	}
	p, err := f(c.Args, h)
	if err != nil {
		return nil, fmt.Errorf("profile %q: %s %q: %w", prof.Name, role, c.Name, err)
	}
	prof.instances[key] = p
	return p, nil
}

// decodeArgs decodes plugin arguments strictly, so a misspelt parameter is an error.
func decodeArgs(args json.RawMessage, into any) error {
	if len(bytes.TrimSpace(args)) == 0 || string(bytes.TrimSpace(args)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("args: %w", err)
	}
	return nil
}
