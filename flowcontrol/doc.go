// Package flowcontrol decides when an admitted request may be scheduled: it holds requests in
// priority bands while the pool is saturated, shares each band fairly between flows (tenants),
// orders each flow first come first served or by deadline, and refuses what must not wait
// (sheddable requests under saturation, a full band, a request past its time to live) with a
// 429 and its reason.
//
// It plugs into the request lifecycle as its Admitter. It is event driven: it dispatches when
// something changes (an arrival, a completion, a first token, new metrics, a timer on the
// injected clock), never on a ticker of its own, so an idle picker spends no CPU and the same
// code runs in real time and on the wind tunnel's virtual clock. Saturation counts the
// picker's own dispatches since each replica's last scrape, so it cannot overshoot between
// scrapes. The llm-d design it is measured against (a 1 ms ticker, a utilization detector on
// scraped metrics alone) is here as a mode, for the comparison only.
//
// Allowed imports (checked by imports_test.go): pool, requestcontrol, scheduler, github.com/prometheus/client_golang, k8s.io/apimachinery.
package flowcontrol
