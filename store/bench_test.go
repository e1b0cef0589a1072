package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/augur-llm/augur/store"
)

// BenchmarkRecorderThroughput is the picker's writer at full speed: 200,000 samples handed to
// the recorder as fast as Add takes them, timed until the last is in Postgres.
func BenchmarkRecorderThroughput(b *testing.B) {
	db := open(b, shared.NewDatabase(b))
	if err := store.Migrate(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	const n = 200_000
	samples := make([]store.Sample, 1000)
	now := time.Now()
	for i := range samples {
		samples[i] = fullSample(i, now)
	}
	for b.Loop() {
		r := store.NewRecorder(db, store.RecorderOptions{BufferSize: n})
		go r.Run()
		start := time.Now()
		for i := range n {
			r.Add(samples[i%len(samples)])
		}
		added := time.Since(start)
		for r.Stats().Recorded < n {
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		if err := r.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		if st := r.Stats(); st.Recorded != n || st.DroppedFull != 0 {
			b.Fatalf("stats %+v", st)
		}
		b.ReportMetric(n/elapsed.Seconds(), "samples/s")
		b.ReportMetric(float64(added.Nanoseconds())/n, "ns/Add")
	}
}
