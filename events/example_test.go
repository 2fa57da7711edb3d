package events_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/surgekit/surge/events"
)

type order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

func Example() {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "orders"))
	if err != nil {
		panic(err)
	}
	defer kf.Close()
	brokers := kf.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	p, err := events.NewProducer(events.ProducerConfig{Brokers: brokers})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	for i := 1; i <= 3; i++ {
		ev, _ := events.NewEvent("order.created", "customer-7", order{ID: fmt.Sprint("o-", i), Total: 10 * i})
		if err := p.Publish(ctx, "orders", ev); err != nil {
			panic(err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	seen := 0
	c, err := events.NewConsumer(events.ConsumerConfig{
		Brokers: brokers, Group: "billing", Topics: []string{"orders"}, Concurrency: 4,
		Handler: func(_ context.Context, ev events.Event) error {
			var o order
			if err := ev.Decode(&o); err != nil {
				return events.Permanent(err)
			}
			fmt.Println(ev.Type, ev.Key, o.ID, o.Total) // one key: in order
			if seen++; seen == 3 {
				stop()
			}
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	if err := c.Run(runCtx); err != nil {
		panic(err)
	}
	fmt.Println("handled:", c.Stats().Handled)
	// Output:
	// order.created customer-7 o-1 10
	// order.created customer-7 o-2 20
	// order.created customer-7 o-3 30
	// handled: 3
}

func ExampleEvaluateWindow() {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stuck := []events.LagSample{
		{Time: at, Commit: 100, End: 180, Members: 3},
		{Time: at.Add(30 * time.Second), Commit: 100, End: 250, Members: 3},
		{Time: at.Add(time.Minute), Commit: 100, End: 300, Members: 3},
	}
	fmt.Println(events.EvaluateWindow(stuck, true))
	stuck[2].Members = 0
	fmt.Println(events.EvaluateWindow(stuck, true))
	// Output:
	// STALL
	// STOP
}
