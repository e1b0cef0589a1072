// Package store is the single owner of Augur's SQL: the Postgres schema and its embedded,
// versioned migrations, the request-sample log every routed request is recorded to, its
// retention, and the model-version table the trainer publishes to.
//
// Recording never slows or breaks routing: the Recorder takes samples into a bounded
// in-memory buffer and a background writer copies them to Postgres in batches, retrying while
// the database is away and counting what it could not keep.
//
// Nothing on the request path waits on it; its dependencies are listed below.
//
// Allowed imports (checked by imports_test.go): models, github.com/jackc/pgx/v5, github.com/prometheus/client_golang, k8s.io/apimachinery, k8s.io/utils.
package store
