// Package pool is the picker's view of the model-server replicas it routes to: which replicas
// exist (from an endpoint file), the vLLM metrics scraped from each, how fresh those metrics are,
// and the picker's own exact accounting of the work it has dispatched to each replica and not
// yet seen finish.
//
// Scraped metrics lag by up to a scrape interval and are shared by every picker; the in-flight
// accounting is immediate but covers only this picker. Scorers use both.
//
// It may depend on the tokens package, the Prometheus text parser and k8s.io/utils/clock;
// never on the scheduler or the request path.
//
// Allowed imports (checked by imports_test.go): tokens, github.com/prometheus/client_model, github.com/prometheus/common, k8s.io/utils, sigs.k8s.io/yaml.
package pool
