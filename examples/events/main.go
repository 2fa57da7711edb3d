// Command events shows surge's Kafka events: a producer publishes account events keyed by
// account id, and a consumer group handles them
//
//   - concurrently across accounts but in order within one account (checked here);
//   - once, even when the producer sends an event twice (a retry after a lost ack): the
//     Redis Deduper remembers handled event ids;
//   - with retries, and a dead-letter topic for an event that can never succeed;
//   - then shuts down cleanly: running handlers finish, offsets are committed.
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
	"sync"
	"sync/atomic"
	"time"

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
	var (
		mu                      sync.Mutex // guards lastSeq, outOfOrder, maxInFlight
		lastSeq                 = map[string]int{}
		outOfOrder, maxInFlight int64
		handled, inFlight, bad  atomic.Int64
		want                    = int64(accounts * perAccount)
		done                    = make(chan struct{}) // closed when all good events are handled
	)
	cons, err := events.NewConsumer(events.ConsumerConfig{
		Brokers: kb.Brokers, Group: "ledger-" + suffix, Topics: []string{topic},
		Concurrency: 4, MaxAttempts: 3, DeadLetterTopic: dlq,
		Backoff: func(int) time.Duration { return 50 * time.Millisecond },
		Deduper: events.NewRedisDeduper(rb.Client, time.Hour),
		Handler: func(ctx context.Context, ev events.Event) error {
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
	pub, err := events.NewProducer(events.ProducerConfig{Brokers: kb.Brokers})
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
	if err := pub.Publish(ctx, topic, batch...); err != nil {
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
	fmt.Printf("consumer stopped cleanly after %d commits\nevents example done\n", st.Commits)
	return nil
}
