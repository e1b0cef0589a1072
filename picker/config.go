package picker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/scheduler"
)

// Config is the picker's configuration file. Zero fields take the defaults below. Durations
// are written as Go durations ("50ms", "2s").
type Config struct {
	// GRPCAddress is where the ext_proc and health services listen.
	GRPCAddress string `json:"grpcAddress,omitempty"`
	// MetricsAddress is where /metrics is served; "" disables it.
	MetricsAddress string `json:"metricsAddress,omitempty"`
	// EndpointsFile lists the replicas (see pool.File); Endpoints lists them inline instead.
	EndpointsFile string          `json:"endpointsFile,omitempty"`
	Endpoints     []pool.Endpoint `json:"endpoints,omitempty"`
	// Kubernetes discovers the replicas as ready pods instead (set one of the three).
	Kubernetes     *KubernetesConfig `json:"kubernetes,omitempty"`
	ScrapeInterval metav1.Duration   `json:"scrapeInterval,omitzero"`
	ScrapeTimeout  metav1.Duration   `json:"scrapeTimeout,omitzero"`
	// StaleAfter is how old a replica's metrics may be before it is not routed to.
	StaleAfter metav1.Duration `json:"staleAfter,omitzero"`
	// MaxBodyBytes is the request body limit; larger bodies get 413.
	MaxBodyBytes int `json:"maxBodyBytes,omitempty"`
	// Fallbacks is how many replicas follow the primary in the destination list
	// ("ip:port,ip:port"). The default is none, because Envoy's ORIGINAL_DST cluster reads the
	// header as a single address; set it with gateways that retry on the list (Envoy's
	// override_host load-balancing policy, Augur's local gateway).
	Fallbacks *int `json:"fallbacks,omitempty"`
	// Seed makes random tie-breaks repeatable; 0 picks one at start.
	Seed uint64 `json:"seed,omitempty"`
	// Profile is the scheduling profile; nil means the built-in named by ProfileName.
	Profile *scheduler.ProfileConfig `json:"profile,omitempty"`
	// ProfileName names a built-in profile (scheduler.BuiltinProfiles: default, llm-d,
	// prefix-load, prefix-guarded, round-robin, random, llm-d-token, llm-d-active,
	// llm-d-predicted, augur) when Profile is not set.
	ProfileName string `json:"profileName,omitempty"`
	// DrainTimeout is how long requests in progress may run after shutdown starts.
	DrainTimeout metav1.Duration `json:"drainTimeout,omitzero"`
	// DatabaseURL is the Postgres every routed request is recorded to; "" records nothing.
	DatabaseURL string `json:"databaseURL,omitempty"`
	// Retention is how long recorded samples are kept; default 7 days.
	Retention metav1.Duration `json:"retention,omitzero"`
	// Models says where the latency models come from; see ModelsConfig.
	Models ModelsConfig `json:"models,omitzero"`
	// FlowControl, when set, turns flow control on (package flowcontrol): requests wait in
	// the picker, in priority bands by their objective (x-gateway-inference-objective) and
	// shared fairly between flows (x-gateway-inference-fairness-id), while the pool is
	// saturated; sheddable ones (negative priority) and those past the TTL get 429 with
	// x-llm-d-request-dropped-reason. The profile gets flow control's room filter. Keys:
	// objectives ({name: {priority, ttftMs, tpotMs, fairnessWeight}}), defaultObjective,
	// fairness, flowWeights, ordering, maxRequestsPerBand, maxBytesPerBand, ttl, refuseLate,
	// saturation ({queuePerReplica, stepShare, kvCache, stale, staleAfter}), mode,
	// tickInterval; see flowcontrol.Config. An empty section ({}) turns it on with the
	// defaults. It takes effect at start only: a reload that changes it is logged and waits
	// for the next restart.
	FlowControl *flowcontrol.Config `json:"flowControl,omitempty"`
}

// ModelsConfig says which trained latency models the predictor follows. Every decision is
// predicted: by the published models once there are any, before that by the cold-start
// prior fitted online from this picker's own samples (see package predictor).
type ModelsConfig struct {
	// Source is "database" (the champions in databaseURL's model_versions table; the
	// default when databaseURL is set), "directory" (Directory, e.g. a mounted ConfigMap) or
	// "none" (the cold start only; the default without databaseURL).
	Source string `json:"source,omitempty"`
	// Directory holds the models in the layout models.WriteDir writes.
	Directory string `json:"directory,omitempty"`
	// PollInterval is how often the source is checked for new models; default 10s.
	PollInterval metav1.Duration `json:"pollInterval,omitzero"`
}

// Model sources.
const (
	ModelsFromDatabase  = "database"
	ModelsFromDirectory = "directory"
	ModelsNone          = "none"
)

// KubernetesConfig selects the replicas among a namespace's pods: by label, or through an
// InferencePool (inference.networking.k8s.io/v1) whose selector and target port are followed.
type KubernetesConfig struct {
	Namespace     string            `json:"namespace"`
	Selector      map[string]string `json:"selector,omitempty"`
	TargetPort    int               `json:"targetPort,omitempty"`
	InferencePool string            `json:"inferencePool,omitempty"`
	// ClassLabel is the pod label naming the replica's class (e.g. augur.dev/class).
	ClassLabel string `json:"classLabel,omitempty"`
	// MetricsPort, when set, is where /metrics is scraped instead of the target port.
	MetricsPort int `json:"metricsPort,omitempty"`
	// Kubeconfig is a kubeconfig file for running outside the cluster; "" uses the pod's
	// service account.
	Kubeconfig string `json:"kubeconfig,omitempty"`
}

// Defaults.
const (
	DefaultGRPCAddress    = "127.0.0.1:9002"
	DefaultMetricsAddress = "127.0.0.1:9090"
	DefaultFallbacks      = 0
	DefaultDrainTimeout   = 30 * time.Second
)

// LoadConfig reads a YAML configuration file strictly: unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses configuration YAML strictly.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && isDuration(te.Field) {
			// The decoder names the string it wanted, not the duration behind it.
			return Config{}, fmt.Errorf("config: %s must be a duration like \"50ms\" or \"2s\", not a %s", te.Field, te.Value)
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := c.checkFlowControl(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// isDuration reports whether the JSON path field ("staleAfter", "flowControl.ttl") names one
// of Config's durations, at any depth.
func isDuration(field string) bool {
	t := reflect.TypeFor[Config]()
	for part := range strings.SplitSeq(field, ".") {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return false
		}
		found := false
		for i := range t.NumField() {
			f := t.Field(i)
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name == part {
				t, found = f.Type, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return t == reflect.TypeFor[metav1.Duration]()
}

func (c *Config) withDefaults() {
	if c.GRPCAddress == "" {
		c.GRPCAddress = DefaultGRPCAddress
	}
	if c.ScrapeInterval.Duration <= 0 {
		c.ScrapeInterval.Duration = pool.DefaultScrapeInterval
	}
	if c.StaleAfter.Duration <= 0 {
		c.StaleAfter.Duration = pool.DefaultStaleAfter
	}
	if c.Fallbacks == nil {
		n := DefaultFallbacks
		c.Fallbacks = &n
	}
	if c.DrainTimeout.Duration <= 0 {
		c.DrainTimeout.Duration = DefaultDrainTimeout
	}
	if c.Models.Source == "" {
		c.Models.Source = ModelsNone
		if c.DatabaseURL != "" {
			c.Models.Source = ModelsFromDatabase
		}
	}
	if c.Models.PollInterval.Duration <= 0 {
		c.Models.PollInterval.Duration = predictor.DefaultFollowInterval
	}
}

// checkModels reports a models section that cannot work.
func (c *Config) checkModels() error {
	switch c.Models.Source {
	case ModelsNone:
	case ModelsFromDatabase:
		if c.DatabaseURL == "" {
			return fmt.Errorf("config: models.source database needs databaseURL")
		}
	case ModelsFromDirectory:
		if c.Models.Directory == "" {
			return fmt.Errorf("config: models.source directory needs models.directory")
		}
	default:
		return fmt.Errorf("config: models.source %q: want database, directory or none", c.Models.Source)
	}
	return nil
}

// checkFlowControl reports a flowControl section flow control would refuse, so that a bad
// value fails when the file is read (naming the file) rather than at start or, for a reload,
// only in the log of a restart long after the edit. flowcontrol.New is the check: it is what
// the picker calls at start, and it needs only a pool, which may be empty here.
func (c *Config) checkFlowControl() error {
	if c.FlowControl == nil {
		return nil
	}
	if _, err := flowcontrol.New(*c.FlowControl, flowcontrol.Options{Pool: pool.New(clock.RealClock{}, 0)}); err != nil {
		return fmt.Errorf("config: flowControl: %w", err)
	}
	return nil
}

// profile resolves the scheduling profile the configuration asks for. Predictions read the
// prefix match a prefix plugin computes, so a profile without one gets one that only informs
// them (weight 0): it changes no score.
func (c *Config) profile() (scheduler.ProfileConfig, error) {
	pc, err := c.namedProfile()
	if err != nil {
		return pc, err
	}
	for _, p := range slices.Concat(pc.Filters, pc.Scorers) {
		if p.Name == "prefix" {
			return pc, nil
		}
	}
	zero := 0.0
	pc.Scorers = append(slices.Clone(pc.Scorers), scheduler.PluginConfig{Name: "prefix", Weight: &zero})
	return pc, nil
}

func (c *Config) namedProfile() (scheduler.ProfileConfig, error) {
	switch {
	case c.Profile != nil && c.ProfileName != "":
		return scheduler.ProfileConfig{}, fmt.Errorf("config: set profile or profileName, not both")
	case c.Profile != nil:
		return *c.Profile, nil
	case c.ProfileName != "":
		p, ok := scheduler.BuiltinProfiles()[c.ProfileName]
		if !ok {
			var names []string
			for n := range scheduler.BuiltinProfiles() {
				names = append(names, n)
			}
			slices.Sort(names)
			return p, fmt.Errorf("config: unknown profileName %q (built-in: %s)", c.ProfileName, strings.Join(names, ", "))
		}
		return p, nil
	}
	return scheduler.DefaultProfileConfig(), nil
}

// endpoints returns the replicas known from the configuration alone: the inline list or the
// endpoint file's current content; none for Kubernetes, whose pods arrive once discovered.
func (c *Config) endpoints() ([]pool.Endpoint, error) {
	set := 0
	for _, b := range []bool{c.EndpointsFile != "", len(c.Endpoints) > 0, c.Kubernetes != nil} {
		if b {
			set++
		}
	}
	if set > 1 {
		return nil, fmt.Errorf("config: set one of endpoints, endpointsFile and kubernetes")
	}
	if c.Kubernetes != nil {
		k := c.Kubernetes
		if k.Namespace == "" {
			return nil, fmt.Errorf("config: kubernetes.namespace is required")
		}
		if k.InferencePool == "" && (len(k.Selector) == 0 || k.TargetPort <= 0) {
			return nil, fmt.Errorf("config: kubernetes needs inferencePool, or selector and targetPort")
		}
		return nil, nil
	}
	if c.EndpointsFile != "" {
		return pool.LoadFile(c.EndpointsFile)
	}
	if len(c.Endpoints) == 0 {
		return nil, fmt.Errorf("config: no endpoints (set endpoints, endpointsFile or kubernetes)")
	}
	for _, e := range c.Endpoints {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	return c.Endpoints, nil
}
