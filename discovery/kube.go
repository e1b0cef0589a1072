package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/augur-llm/augur/pool"
)

// inferencePoolGVR is the resource of the Gateway API Inference Extension's InferencePool.
var inferencePoolGVR = schema.GroupVersionResource{
	Group:    "inference.networking.k8s.io",
	Version:  "v1",
	Resource: "inferencepools",
}

// KubeConfig says which pods a KubernetesSource reports.
type KubeConfig struct {
	// Namespace holds the pods (and the InferencePool). Required.
	Namespace string
	// Selector is the pods' required labels (matchLabels). Ignored when InferencePool is set.
	Selector map[string]string
	// TargetPort is the port on the pod IP that serves requests. Ignored when InferencePool is
	// set.
	TargetPort int
	// InferencePool, if set, names an InferencePool in Namespace whose spec.selector.matchLabels
	// and first spec.targetPorts entry select the pods; changes to it are followed.
	InferencePool string
	// ClassLabel is the pod label that gives the replica's class; "" means none.
	ClassLabel string
	// MetricsPort, if set, is where metrics are scraped (http://podIP:MetricsPort/metrics)
	// instead of the target port.
	MetricsPort int
	// Log receives changes and errors. Nil means slog.Default().
	Log *slog.Logger
	// OnError, if set, is told of InferencePool changes that were ignored because the pool was
	// deleted or became invalid; the previous selection stays in force.
	OnError func(error)
}

// KubernetesSource reports the ready pods of a label selector or an InferencePool.
type KubernetesSource struct {
	client kubernetes.Interface
	dyn    dynamic.Interface
	cfg    KubeConfig
	log    *slog.Logger
	static selection // the configured selector and port when there is no InferencePool
}

// selection is the pods a source reports: those matching labels, served on port.
type selection struct {
	labels map[string]string
	sel    labels.Selector
	port   int
}

func (s selection) equal(o selection) bool {
	return s.port == o.port && maps.Equal(s.labels, o.labels)
}

func newSelection(matchLabels map[string]string, port int) (selection, error) {
	if len(matchLabels) == 0 {
		// An empty selector matches every pod in the namespace, which is never a replica set.
		return selection{}, errors.New("selector is empty")
	}
	sel, err := labels.ValidatedSelectorFromSet(matchLabels)
	if err != nil {
		return selection{}, fmt.Errorf("selector: %w", err)
	}
	if port < 1 || port > 65535 {
		return selection{}, fmt.Errorf("target port %d is out of range", port)
	}
	return selection{labels: maps.Clone(matchLabels), sel: sel, port: port}, nil
}

// NewKubernetesSource checks cfg and returns a source that uses client for pods and dyn for
// the InferencePool. dyn may be nil when cfg.InferencePool is empty.
func NewKubernetesSource(client kubernetes.Interface, dyn dynamic.Interface, cfg KubeConfig) (*KubernetesSource, error) {
	if client == nil {
		return nil, errors.New("kubernetes source: nil client")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("kubernetes source: namespace is required")
	}
	if cfg.MetricsPort < 0 || cfg.MetricsPort > 65535 {
		return nil, fmt.Errorf("kubernetes source: metrics port %d is out of range", cfg.MetricsPort)
	}
	s := &KubernetesSource{client: client, dyn: dyn, cfg: cfg, log: orDefault(cfg.Log).With("namespace", cfg.Namespace)}
	if cfg.InferencePool != "" {
		if dyn == nil {
			return nil, fmt.Errorf("kubernetes source: InferencePool %q needs a dynamic client", cfg.InferencePool)
		}
		s.log = s.log.With("inferencePool", cfg.InferencePool)
		return s, nil
	}
	sel, err := newSelection(cfg.Selector, cfg.TargetPort)
	if err != nil {
		return nil, fmt.Errorf("kubernetes source: %w", err)
	}
	s.static = sel
	return s, nil
}

// Run reports the ready pods and follows pod (and InferencePool) changes. A missing or invalid
// InferencePool, or pods that cannot be listed, are errors at start; after that, a deleted or
// invalid InferencePool is logged and the previous selection kept.
func (s *KubernetesSource) Run(ctx context.Context, update func([]pool.Endpoint)) error {
	if update == nil {
		return errors.New("kubernetes source: nil update func")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Informer handlers only raise this flag; the loop below recomputes from the caches, so
	// update is called from one goroutine and a burst of events costs one recomputation.
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}

	sel := s.static
	var poolCache *poolFollower
	if s.cfg.InferencePool != "" {
		// A Get first: an informer retries a missing object or resource (CRD not installed,
		// no RBAC) quietly forever, and startup must fail loudly instead.
		obj, err := s.dyn.Resource(inferencePoolGVR).Namespace(s.cfg.Namespace).Get(ctx, s.cfg.InferencePool, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("kubernetes source: get InferencePool %s/%s: %w", s.cfg.Namespace, s.cfg.InferencePool, err)
		}
		if sel, err = parseInferencePool(obj); err != nil {
			return fmt.Errorf("kubernetes source: InferencePool %s/%s: %w", s.cfg.Namespace, s.cfg.InferencePool, err)
		}
		inf := dynamicinformer.NewFilteredDynamicInformer(s.dyn, inferencePoolGVR, s.cfg.Namespace, 0, cache.Indexers{},
			func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.cfg.InferencePool).String()
			}).Informer()
		w, err := s.startInformer(ctx, inf, handler, "InferencePool")
		if err != nil {
			return err
		}
		defer w.stop()
		if err := w.waitSynced(ctx); err != nil {
			return nil
		}
		poolCache = &poolFollower{src: s, store: inf.GetStore()}
		// The pool may have changed between the Get and the informer's list.
		if next, ok := poolCache.selection(sel); ok {
			sel = next
		}
	}

	// A list with the real selector first, for the same reason as the Get above.
	if _, err := s.client.CoreV1().Pods(s.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.sel.String(), Limit: 1}); err != nil {
		return fmt.Errorf("kubernetes source: list pods in %s: %w", s.cfg.Namespace, err)
	}
	pods, err := s.startPods(ctx, sel, handler)
	if err != nil {
		return err
	}
	defer func() { pods.stop() }()
	if err := pods.waitSynced(ctx); err != nil {
		return nil
	}

	current := s.endpoints(pods.inf.GetStore(), sel)
	s.log.Info("kubernetes endpoints synced", "endpoints", len(current), "selector", sel.sel.String(), "port", sel.port)
	if len(current) == 0 {
		s.log.Warn("no ready pods match the selector", "selector", sel.sel.String())
	}
	update(slices.Clone(current))

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
		if poolCache != nil {
			if next, ok := poolCache.selection(sel); ok && !next.equal(sel) {
				s.log.Info("InferencePool changed", "selector", next.sel.String(), "port", next.port)
				if !maps.Equal(next.labels, sel.labels) {
					// The pod informer filters on the server, so a new selector needs a new one.
					// Start it before stopping the old so the set never passes through empty;
					// until it has synced, the old set stays in force.
					np, err := s.startPods(ctx, next, handler)
					if err != nil {
						return err
					}
					if err := np.waitSynced(ctx); err != nil {
						np.stop()
						return nil
					}
					pods.stop()
					pods = np
				}
				sel = next
			}
		}
		next := s.endpoints(pods.inf.GetStore(), sel)
		if sameSet(next, current) {
			continue
		}
		s.log.Info("kubernetes endpoints changed", "endpoints", len(next), "before", len(current))
		current = next
		update(slices.Clone(current))
	}
}

// poolFollower reads the InferencePool from its informer's cache.
type poolFollower struct {
	src     *KubernetesSource
	store   cache.Store
	lastErr string // the problem last reported, so a lasting one is reported once
}

// selection returns the pool's current selection. ok is false, once the problem has been
// reported, when the pool is gone or invalid: the caller keeps prev then.
func (f *poolFollower) selection(prev selection) (sel selection, ok bool) {
	cfg := f.src.cfg
	obj, exists, err := f.store.GetByKey(cfg.Namespace + "/" + cfg.InferencePool)
	if err == nil && !exists {
		err = errors.New("it was deleted")
	}
	if err == nil {
		u, isU := obj.(*unstructured.Unstructured)
		if !isU {
			err = fmt.Errorf("unexpected object %T in the informer cache", obj)
		} else {
			sel, err = parseInferencePool(u)
		}
	}
	if err == nil {
		f.lastErr = ""
		return sel, true
	}
	if msg := err.Error(); msg != f.lastErr {
		f.lastErr = msg
		err = fmt.Errorf("InferencePool %s/%s: %w; keeping selector %s and port %d",
			cfg.Namespace, cfg.InferencePool, err, prev.sel, prev.port)
		f.src.log.Error("InferencePool change ignored", "err", err)
		if cfg.OnError != nil {
			cfg.OnError(err)
		}
	}
	return prev, false
}

// parseInferencePool takes the pod selection from an InferencePool (v1): spec.selector.matchLabels
// and the first spec.targetPorts entry.
func parseInferencePool(u *unstructured.Unstructured) (selection, error) {
	matchLabels, found, err := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
	if err != nil {
		return selection{}, fmt.Errorf("spec.selector.matchLabels: %w", err)
	}
	if !found {
		return selection{}, errors.New("spec.selector.matchLabels is missing")
	}
	ports, found, err := unstructured.NestedSlice(u.Object, "spec", "targetPorts")
	if err != nil {
		return selection{}, fmt.Errorf("spec.targetPorts: %w", err)
	}
	if !found || len(ports) == 0 {
		return selection{}, errors.New("spec.targetPorts is missing or empty")
	}
	// Several target ports mean several serving ranks per pod; reporting one endpoint per pod
	// keeps names unique, and the first port is the one that is always present.
	first, ok := ports[0].(map[string]any)
	if !ok {
		return selection{}, fmt.Errorf("spec.targetPorts[0] is a %T, not an object", ports[0])
	}
	port, err := portNumber(first["number"])
	if err != nil {
		return selection{}, fmt.Errorf("spec.targetPorts[0].number: %w", err)
	}
	sel, err := newSelection(matchLabels, port)
	if err != nil {
		return selection{}, fmt.Errorf("spec: %w", err)
	}
	return sel, nil
}

// portNumber accepts the numeric types a decoded object can hold.
func portNumber(v any) (int, error) {
	switch n := v.(type) {
	case int64:
		return int(n), nil
	case int32:
		return int(n), nil
	case int:
		return n, nil
	case float64:
		if n == float64(int(n)) {
			return int(n), nil
		}
	case nil:
		return 0, errors.New("missing")
	}
	return 0, fmt.Errorf("%v is not an integer", v)
}

// endpoints computes the reported set from the pod cache: ready pods matching sel, sorted by
// name, with addresses unique.
func (s *KubernetesSource) endpoints(store cache.Store, sel selection) []pool.Endpoint {
	var eps []pool.Endpoint
	for _, obj := range store.List() {
		p, ok := obj.(*corev1.Pod)
		// The server filters by namespace and labels already; checking again keeps a
		// superseded or unfiltered watch (as fake clients give) from leaking pods in.
		if !ok || p.Namespace != s.cfg.Namespace || !sel.sel.Matches(labels.Set(p.Labels)) || !podReady(p) {
			continue
		}
		e := pool.Endpoint{
			Name:    p.Name,
			Address: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(sel.port)),
		}
		if s.cfg.ClassLabel != "" {
			e.Class = p.Labels[s.cfg.ClassLabel]
		}
		if s.cfg.MetricsPort != 0 {
			e.MetricsURL = "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(s.cfg.MetricsPort)) + "/metrics"
		}
		if err := e.Validate(); err != nil {
			s.log.Warn("pod skipped", "pod", p.Name, "err", err)
			continue
		}
		eps = append(eps, e)
	}
	slices.SortFunc(eps, func(a, b pool.Endpoint) int { return strings.Compare(a.Name, b.Name) })
	// Host-network pods on one node share an IP; the pool refuses duplicate addresses, so the
	// first by name wins rather than the whole update failing.
	seenName := make(map[string]bool, len(eps))
	seenAddr := make(map[string]bool, len(eps))
	out := eps[:0]
	for _, e := range eps {
		if seenName[e.Name] || seenAddr[e.Address] {
			s.log.Warn("pod skipped: duplicate name or address", "pod", e.Name, "address", e.Address)
			continue
		}
		seenName[e.Name], seenAddr[e.Address] = true, true
		out = append(out, e)
	}
	return out
}

// podReady reports whether a pod should receive requests: running, passing its readiness
// probe, not shutting down, and addressable.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// running is an informer started by the source, which stops it again.
type running struct {
	inf     cache.SharedIndexInformer
	handler cache.ResourceEventHandlerRegistration
	cancel  context.CancelFunc
	done    chan struct{}
}

func (s *KubernetesSource) startPods(ctx context.Context, sel selection, h cache.ResourceEventHandler) (*running, error) {
	inf := coreinformers.NewFilteredPodInformer(s.client, s.cfg.Namespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = sel.sel.String() })
	return s.startInformer(ctx, inf, h, "pods")
}

func (s *KubernetesSource) startInformer(ctx context.Context, inf cache.SharedIndexInformer, h cache.ResourceEventHandler, what string) (*running, error) {
	log := s.log.With("informer", what)
	// After startup the informer retries on its own; the log is where a lost watch shows.
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		log.Warn("watch failed; retrying", "err", err)
	}); err != nil {
		return nil, fmt.Errorf("kubernetes source: %s informer: %w", what, err)
	}
	reg, err := inf.AddEventHandler(h)
	if err != nil {
		return nil, fmt.Errorf("kubernetes source: %s informer: %w", what, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &running{inf: inf, handler: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		inf.RunWithContext(ctx)
	}()
	return r, nil
}

// waitSynced waits until the informer's cache holds a full list and the handler has seen it;
// it fails only when ctx ends first.
func (r *running) waitSynced(ctx context.Context) error {
	select {
	case <-r.handler.HasSyncedChecker().Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop ends the informer and waits for it, so no goroutine outlives Run.
func (r *running) stop() {
	r.cancel()
	<-r.done
}
