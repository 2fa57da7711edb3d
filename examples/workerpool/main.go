// Command workerpool shows the classic plain-Go worker pool: a producer feeds a jobs channel,
// a fixed number of worker goroutines process jobs and send results on a results channel, and
// one collector goroutine aggregates them. On Ctrl-C or when -duration runs out, the producer
// stops, the workers finish the jobs they already took (graceful shutdown: nothing started is
// lost), the results channel is closed, and the program prints a summary. It needs no Redis or
// Kafka, and it uses no surge package.
//
// The pattern fits independent jobs. surge's events.Consumer is not built on it: a jobs
// channel hands any job to any free worker, which would reorder the events of one key, so its
// Concurrency workers instead take the next ready key from a queue under a mutex and a
// condition variable, one event of a key at a time, and offsets are committed only up to the
// first event not yet handled. What the two share is the shutdown order shown here: stop
// taking new work, let the workers finish what they took, then report.
//
// Run it:
//
//	go run ./examples/workerpool                       # 3 s, 4 workers
//	go run ./examples/workerpool -workers 16 -duration 10s -fail 0.05
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// job is one unit of work; result is what a worker made of it.
type job struct {
	ID   int
	Cost time.Duration
}

type result struct {
	JobID  int
	Worker int
	Took   time.Duration
	Err    error
}

var errTransient = errors.New("transient failure")

func main() {
	workers := flag.Int("workers", 4, "number of worker goroutines")
	duration := flag.Duration("duration", 3*time.Second, "how long to produce jobs (0: until Ctrl-C)")
	maxJobs := flag.Int("jobs", 0, "stop after this many jobs (0: no limit)")
	failRate := flag.Float64("fail", 0.02, "fraction of jobs that fail")
	flag.Parse()
	if *workers <= 0 {
		fmt.Fprintln(os.Stderr, "workerpool: -workers must be positive")
		os.Exit(2)
	}

	// ctx ends on Ctrl-C / SIGTERM or when -duration runs out: the signal to stop producing.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	fmt.Printf("workerpool: %d workers, producing for %v (Ctrl-C stops early)\n", *workers, *duration)

	// Buffered to twice the workers: the producer runs a little ahead, but is held back
	// (back-pressure) when the workers fall behind, so memory stays bounded.
	jobs := make(chan job, 2**workers)
	results := make(chan result, 2**workers)

	// Producer: stops when ctx ends or -jobs is reached, then closes jobs so workers exit.
	go func() {
		defer close(jobs)
		for id := 1; *maxJobs == 0 || id <= *maxJobs; id++ {
			j := job{ID: id, Cost: time.Duration(1+rand.IntN(10)) * time.Millisecond}
			select {
			case jobs <- j:
			case <-ctx.Done():
				return
			}
		}
	}()

	// Workers: range over jobs until it is closed and drained. A worker never abandons a
	// job it took, which is the graceful part: shutdown waits for in-flight work.
	var wg sync.WaitGroup
	for w := 1; w <= *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				results <- process(w, j, *failRate)
			}
		}()
	}
	// Close results only once every worker is done sending on it.
	go func() { wg.Wait(); close(results) }()

	// Collector (here, the main goroutine): reads until results is closed.
	var (
		done, failed int
		total        time.Duration
		perWorker    = make(map[int]int)
		start        = time.Now()
	)
	for r := range results {
		done++
		total += r.Took
		perWorker[r.Worker]++
		if r.Err != nil {
			failed++
		}
	}
	elapsed := time.Since(start)

	fmt.Printf("workerpool: shut down cleanly after %v\n", elapsed.Round(time.Millisecond))
	fmt.Printf("processed %d jobs (%d failed), %.0f jobs/s, mean job time %v\n",
		done, failed, float64(done)/elapsed.Seconds(), mean(total, done))
	for w := 1; w <= *workers; w++ {
		fmt.Printf("  worker %2d: %d jobs\n", w, perWorker[w])
	}
}

// process simulates work that takes j.Cost and sometimes fails.
func process(worker int, j job, failRate float64) result {
	start := time.Now()
	time.Sleep(j.Cost) // stands in for I/O: a DB write, an HTTP call
	r := result{JobID: j.ID, Worker: worker, Took: time.Since(start)}
	if rand.Float64() < failRate {
		r.Err = fmt.Errorf("job %d: %w", j.ID, errTransient)
	}
	return r
}

func mean(total time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return (total / time.Duration(n)).Round(10 * time.Microsecond)
}
