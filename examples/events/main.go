// Command events shows surge's Kafka events: a producer publishes account events keyed by
// account id, and a consumer group handles them
//
//   - concurrently across accounts but in order within one account (checked here);
//   - once, even when the producer sends an event twice (a retry after a lost ack): the
//     Redis Deduper remembers handled event ids;
//   - with retries, and a dead-letter topic for an event that can never succeed;
//   - then shuts down cleanly: running handlers finish, offsets are committed;
//   - and traces it: the publish runs under a request span whose trace id every handler's
//     consumer span carries (through the traceparent record header), and the OpenTelemetry
//     metrics are printed at the end.
//
// It uses KAFKA_BROKERS / REDIS_ADDR when set, else in-process kfake and embedded miniredis.
//
//	go run ./examples/events
//	go run ./examples/events -accounts 50 -per-account 100
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/surgekit/surge/events"
	"github.com/surgekit/surge/examples/internal/backend"
)

type deposit struct{ Seq int } // the payload: the account's sequence number

func main() {
	accounts := flag.Int("accounts", 8, "accounts (event keys)")
	perAccount := flag.Int("per-account", 20, "events per account")
	timeout := flag.Duration("timeout", 30*time.Second, "give up if the events are not all handled by then")
	flag.Parse()
	backend.Main("events", *timeout, func(ctx context.Context) error { return run(ctx, *accounts, *perAccount) })
}

func run(ctx context.Context, accounts, perAccount int) error {
	suffix := fmt.Sprint(time.Now().UnixNano()) // fresh topics and group on a shared cluster
	topic, dlq := "deposits-"+suffix, "deposits-dlq-"+suffix
	kb, err := backend.StartKafka(ctx, os.Stdout, topic, dlq)
	if err != nil {
		return err
	}
	defer kb.Close()
	rb, err := backend.StartRedis(ctx, os.Stdout)
	if err != nil {
		return err
	}
	defer rb.Close()
	// The producer and consumer record through these providers; a service passes its own SDK's
	// (or leaves them nil to use the global ones).
	metrics := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	defer mp.Shutdown(context.WithoutCancel(ctx))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.WithoutCancel(ctx))
	prop := propagation.TraceContext{}
	var (
		mu                      sync.Mutex                // guards lastSeq, outOfOrder, maxInFlight, traces
		traces                  = map[trace.TraceID]int{} // handler runs per trace id
		lastSeq                 = map[string]int{}
		outOfOrder, maxInFlight int64
		handled, inFlight, bad  atomic.Int64
		want                    = int64(accounts * perAccount)
		done                    = make(chan struct{}) // closed when all good events are handled
	)
	cons, err := events.NewConsumer(events.ConsumerConfig{
		Brokers: kb.Brokers, Group: "ledger-" + suffix, Topics: []string{topic},
		Concurrency: 4, MaxAttempts: 3, DeadLetterTopic: dlq,
		Backoff:        func(int) time.Duration { return 50 * time.Millisecond },
		Deduper:        events.NewRedisDeduper(rb.Client, time.Hour),
		TracerProvider: tp, MeterProvider: mp, Propagator: prop,
		Handler: func(ctx context.Context, ev events.Event) error {
			mu.Lock()
			traces[trace.SpanContextFromContext(ctx).TraceID()]++
			mu.Unlock()
			if ev.Key == "poison" {
				bad.Add(1)
				return errors.New("account closed") // retried, then dead-lettered
			}
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			mu.Lock()
			maxInFlight = max(maxInFlight, n)
			mu.Unlock()
			var d deposit
			if err := ev.Decode(&d); err != nil {
				return events.Permanent(err)
			}
			time.Sleep(2 * time.Millisecond) // the work
			mu.Lock()
			if d.Seq != lastSeq[ev.Key]+1 {
				outOfOrder++
			}
			lastSeq[ev.Key] = d.Seq
			mu.Unlock()
			if handled.Add(1) == want {
				close(done)
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	runCtx, stopConsumer := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- cons.Run(runCtx) }()
	var runErr error
	// Graceful stop: handlers finish, offsets are committed, the group is left.
	stopAndWait := sync.OnceFunc(func() { stopConsumer(); runErr = <-ran })
	defer stopAndWait()
	pub, err := events.NewProducer(events.ProducerConfig{Brokers: kb.Brokers, TracerProvider: tp, MeterProvider: mp, Propagator: prop})
	if err != nil {
		return err
	}
	defer pub.Close()
	var batch []events.Event // every account's events in sequence order, interleaved
	for seq := 1; seq <= perAccount; seq++ {
		for a := range accounts {
			// NewEvent fails only for an empty type or a payload JSON cannot encode.
			ev, _ := events.NewEvent("deposited", fmt.Sprintf("account-%d", a), deposit{Seq: seq})
			batch = append(batch, ev)
		}
	}
	poison, _ := events.NewEvent("deposited", "poison", deposit{Seq: 1})
	batch = append(batch, poison, batch[0]) // batch[0] again: the same event id, sent twice
	start := time.Now()
	// The request that publishes (an HTTP handler with ginmw.Telemetry in a service).
	reqCtx, req := tp.Tracer("example").Start(ctx, "POST /deposits")
	err = pub.Publish(reqCtx, topic, batch...)
	req.End()
	if err != nil {
		return err
	}
	fmt.Printf("\npublished %d events (%d accounts x %d, one poison event, one duplicate)\n", len(batch), accounts, perAccount)
	select {
	case <-done:
	case <-ctx.Done():
	}
	// The poison event's retries run out, and the duplicate, queued behind its account's other
	// events, reaches the Deduper.
	for st := cons.Stats(); ctx.Err() == nil && (st.DeadLettered == 0 || st.Deduped == 0); st = cons.Stats() {
		time.Sleep(20 * time.Millisecond)
	}
	el := time.Since(start)
	if stopAndWait(); runErr != nil {
		return fmt.Errorf("consumer: %w", runErr)
	}
	if handled.Load() < want {
		return fmt.Errorf("only %d of %d events handled before the timeout", handled.Load(), want)
	}
	st := cons.Stats()
	fmt.Printf("handled %d events in %v, up to %d at once; out of order within an account: %d\n",
		handled.Load(), el.Round(time.Millisecond), maxInFlight, outOfOrder)
	fmt.Printf("duplicate skipped by the Deduper: %d; poison event tried %d times, dead-lettered: %d\n",
		st.Deduped, bad.Load(), st.DeadLettered)
	fmt.Printf("consumer stopped cleanly after %d commits\n", st.Commits)
	tid := req.SpanContext().TraceID()
	fmt.Printf("\ntrace %s: the request, its send span and %d handler runs (%d process spans ended)\n",
		tid, traces[tid], len(spansOf(spans, tid, "process "+topic)))
	if err := printMetrics(ctx, metrics, topic, dlq); err != nil {
		return err
	}
	fmt.Println("events example done")
	return nil
}

// spansOf returns the ended spans called name in trace tid.
func spansOf(rec *tracetest.SpanRecorder, tid trace.TraceID, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == tid && s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// printMetrics prints the events metrics summed over partitions, with the topic names made
// short.
func printMetrics(ctx context.Context, reader *sdkmetric.ManualReader, topic, dlq string) error {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return err
	}
	short := strings.NewReplacer(dlq, "deposits-dlq", topic, "deposits")
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					sums[m.Name+"{"+short.Replace(attrs(p.Attributes))+"}"] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					sums[m.Name+" count{"+short.Replace(attrs(p.Attributes))+"}"] += int64(p.Count)
				}
			}
		}
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range sums {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Printf("   %s %d\n", k, sums[k])
	}
	return nil
}

// attrs writes the attributes that matter here (destination and error type), not the partition.
func attrs(set attribute.Set) string {
	var out []string
	for _, kv := range set.ToSlice() {
		switch kv.Key {
		case "messaging.destination.name", "error.type":
			out = append(out, fmt.Sprintf("%s=%s", kv.Key, kv.Value.Emit()))
		}
	}
	return strings.Join(out, " ")
}
