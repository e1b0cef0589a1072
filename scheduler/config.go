package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/augur-llm/augur/pool"
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

// BuildOptions carries what plugins may need from their environment.
type BuildOptions struct {
	// Seed makes randomised plugins repeatable.
	Seed uint64
	// Pool is the pool the profile schedules over, for plugins that follow its membership.
	Pool *pool.Pool
	// Previous is the profile being replaced, on a configuration reload: its plugins are
	// reused where their configuration is unchanged, so learned state (the prefix record,
	// sessions) survives the reload.
	Previous *Profile
}

// Factory builds a plugin from its arguments. The result must implement Filter, Scorer or
// Picker, as its place in the profile requires.
type Factory func(args json.RawMessage, opts BuildOptions) (any, error)

// Registry maps plugin names to factories.
type Registry map[string]Factory

// DefaultRegistry returns a registry of the built-in plugins.
func DefaultRegistry() Registry {
	return Registry{
		"load": func(args json.RawMessage, _ BuildOptions) (any, error) {
			return LoadScorer{}, decodeArgs(args, &struct{}{})
		},
		"max-score": func(args json.RawMessage, o BuildOptions) (any, error) {
			return NewMaxScorePicker(o.Seed), decodeArgs(args, &struct{}{})
		},
		"round-robin": func(args json.RawMessage, _ BuildOptions) (any, error) {
			return &RoundRobinPicker{}, decodeArgs(args, &struct{}{})
		},
		"prefix": func(args json.RawMessage, o BuildOptions) (any, error) {
			var a struct {
				CapacityBlocks int `json:"capacityBlocks"`
			}
			if err := decodeArgs(args, &a); err != nil {
				return nil, err
			}
			if a.CapacityBlocks < 0 {
				return nil, fmt.Errorf("args: capacityBlocks %d must not be negative", a.CapacityBlocks)
			}
			return NewPrefixScorer(a.CapacityBlocks, o.Pool), nil
		},
		"queue":            noArgs(QueueScorer{}),
		"kv-usage":         noArgs(KVUsageScorer{}),
		"running-requests": noArgs(RunningScorer{}),
		"inflight-load":    noArgs(InflightLoadScorer{}),
		"session-affinity": func(args json.RawMessage, _ BuildOptions) (any, error) {
			var a struct {
				Capacity int `json:"capacity"`
			}
			if err := decodeArgs(args, &a); err != nil {
				return nil, err
			}
			if a.Capacity < 0 {
				return nil, fmt.Errorf("args: capacity %d must not be negative", a.Capacity)
			}
			return NewSessionAffinityScorer(a.Capacity), nil
		},
		"random": func(args json.RawMessage, o BuildOptions) (any, error) {
			return NewRandomPicker(o.Seed), decodeArgs(args, &struct{}{})
		},
		"weighted-random": func(args json.RawMessage, o BuildOptions) (any, error) {
			return NewWeightedRandomPicker(o.Seed), decodeArgs(args, &struct{}{})
		},
		"hotspot-guard": func(args json.RawMessage, _ BuildOptions) (any, error) {
			g := HotspotGuard{Factor: DefaultHotspotFactor, Slack: DefaultHotspotSlack}
			if err := decodeArgs(args, &g); err != nil {
				return nil, err
			}
			if !(g.Factor >= 1) || g.Slack < 0 {
				return nil, fmt.Errorf("args: factor %v must be at least 1 and slack %v not negative", g.Factor, g.Slack)
			}
			return g, nil
		},
	}
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

// BuiltinProfiles are named profiles for comparisons: "default" (load only), "round-robin"
// (the Kubernetes Service baseline), "random", "llm-d" (llm-d's default scorer weights:
// prefix 3, queue 2, KV usage 2), "prefix-load" (prefix affinity weighed against load) and
// "prefix-guarded" (prefix-load behind the hot-spot guard).
func BuiltinProfiles() map[string]ProfileConfig {
	w := func(v float64) *float64 { return &v }
	return map[string]ProfileConfig{
		"default":     DefaultProfileConfig(),
		"round-robin": {Name: "round-robin", Picker: PluginConfig{Name: "round-robin"}},
		"random":      {Name: "random", Picker: PluginConfig{Name: "random"}},
		"llm-d": {Name: "llm-d", Scorers: []PluginConfig{{Name: "prefix", Weight: w(3)}, {Name: "queue", Weight: w(2)}, {Name: "kv-usage", Weight: w(2)}},
			Picker: PluginConfig{Name: "max-score"}},
		"prefix-load": {Name: "prefix-load", Scorers: []PluginConfig{{Name: "prefix", Weight: w(3)}, {Name: "load", Weight: w(2)}},
			Picker: PluginConfig{Name: "max-score"}},
		"prefix-guarded": {Name: "prefix-guarded", Filters: []PluginConfig{{Name: "hotspot-guard"}},
			Scorers: []PluginConfig{{Name: "prefix", Weight: w(3)}, {Name: "load", Weight: w(2)}},
			Picker:  PluginConfig{Name: "max-score"}},
	}
}

// noArgs is the factory of a plugin without parameters.
func noArgs(p any) Factory {
	return func(args json.RawMessage, _ BuildOptions) (any, error) { return p, decodeArgs(args, &struct{}{}) }
}

// Build constructs the profile pc describes.
func (r Registry) Build(pc ProfileConfig, opts BuildOptions) (*Profile, error) {
	prof := &Profile{Name: pc.Name, instances: map[string]any{}}
	for _, fc := range pc.Filters {
		p, err := r.build(prof, "filter", fc, opts)
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
		p, err := r.build(prof, "scorer", sc, opts)
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
	p, err := r.build(prof, "picker", pc.Picker, opts)
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

func (r Registry) build(prof *Profile, role string, c PluginConfig, opts BuildOptions) (any, error) {
	f, ok := r[c.Name]
	if !ok {
		return nil, fmt.Errorf("profile %q: unknown %s plugin %q", prof.Name, role, c.Name)
	}
	if c.Weight != nil && role != "scorer" {
		return nil, fmt.Errorf("profile %q: %s %q: weight applies to scorers only", prof.Name, role, c.Name)
	}
	key := role + "/" + c.Name + "/" + string(bytes.TrimSpace(c.Args))
	if prev := opts.Previous; prev != nil {
		if p, ok := prev.instances[key]; ok {
			prof.instances[key] = p
			return p, nil
		}
	}
	p, err := f(c.Args, opts)
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
