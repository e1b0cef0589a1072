package picker

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/augur-llm/augur/discovery"
)

// newSource returns where the replica set comes from after start: the watched endpoint file,
// Kubernetes, or nothing for inline endpoints.
func newSource(cfg Config, opts Options, rejected func(error)) (discovery.Source, error) {
	switch {
	case cfg.EndpointsFile != "":
		return discovery.NewFileSource(cfg.EndpointsFile, discovery.FileOptions{Log: opts.Log, OnError: rejected}), nil
	case cfg.Kubernetes != nil:
		k := cfg.Kubernetes
		client, dyn := opts.KubeClient, opts.DynamicClient
		if client == nil || dyn == nil {
			rc, err := restConfig(k.Kubeconfig)
			if err != nil {
				return nil, err
			}
			if client, err = kubernetes.NewForConfig(rc); err != nil {
				return nil, fmt.Errorf("kubernetes client: %w", err)
			}
			if dyn, err = dynamic.NewForConfig(rc); err != nil {
				return nil, fmt.Errorf("kubernetes client: %w", err)
			}
		}
		src, err := discovery.NewKubernetesSource(client, dyn, discovery.KubeConfig{
			Namespace: k.Namespace, Selector: k.Selector, TargetPort: k.TargetPort, InferencePool: k.InferencePool,
			ClassLabel: k.ClassLabel, MetricsPort: k.MetricsPort, Log: opts.Log, OnError: rejected,
		})
		if err != nil {
			return nil, fmt.Errorf("config: kubernetes: %w", err)
		}
		return src, nil
	}
	return nil, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: not running in a cluster and no kubeconfig set: %w", err)
	}
	return rc, nil
}
