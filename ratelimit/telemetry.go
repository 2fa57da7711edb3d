package ratelimit

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/surgekit/surge/internal/otelx"
)

// Telemetry names (the OpenTelemetry contract in the package doc). Every AllowN and Acquire call
// is counted once in surge.ratelimit.decisions.
const (
	metricDecisions = "surge.ratelimit.decisions"
	attrLimit       = "surge.ratelimit.limit"
	attrDecision    = "surge.ratelimit.decision"
)

// decision is the value of surge.ratelimit.decision.
type decision uint8

const (
	decAllowed  decision = iota // the limiter allowed the call
	decDenied                   // the limiter denied it
	decFallback                 // Redis failed and the ErrorPolicy answered (FailOpen or Fallback)
	decError                    // the call returned an error
	numDecisions
)

var decisionNames = [numDecisions]string{"allowed", "denied", "fallback", "error"}

// verdict is decAllowed or decDenied.
func verdict(allowed bool) decision {
	if allowed {
		return decAllowed
	}
	return decDenied
}

// decisions counts one limiter's answers. The option slices are built once, one per label and
// decision, so counting allocates nothing and, with no SDK installed, costs one atomic load.
type decisions struct {
	c    metric.Int64Counter
	opts [][numDecisions][]metric.AddOption // [label index][decision]
	fail []metric.AddOption                 // decError, labelled with every limit (none binds)
}

// newDecisions resolves the counter from mp (nil: the global provider). labels are the values of
// surge.ratelimit.limit an answer can carry, by index; an error carries errLabel.
func newDecisions(mp metric.MeterProvider, labels []string, errLabel string) decisions {
	m := otelx.Meter(mp, otelx.ScopePrefix+"ratelimit")
	set := func(label string, d decision) []metric.AddOption {
		return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
			attribute.String(attrLimit, label), attribute.String(attrDecision, decisionNames[d])))}
	}
	d := decisions{
		c: otelx.Must(m.Int64Counter(metricDecisions,
			metric.WithDescription("Rate and concurrency limiter decisions, by binding limit and decision"),
			metric.WithUnit("{decision}"))),
		opts: make([][numDecisions][]metric.AddOption, len(labels)),
		fail: set(errLabel, decError),
	}
	for i, l := range labels {
		for k := range numDecisions {
			d.opts[i][k] = set(l, k)
		}
	}
	return d
}

// add counts one answer whose binding limit is labels[i].
func (d *decisions) add(ctx context.Context, i int, k decision) { d.c.Add(ctx, 1, d.opts[i][k]...) }

// failed counts one call that returned an error.
func (d *decisions) failed(ctx context.Context) { d.c.Add(ctx, 1, d.fail...) }

// limitLabels returns the surge.ratelimit.limit value of each limit (its String: the Name, or
// "rate/s burst b" without one) and the value an error carries: all of them joined by ",".
func limitLabels(limits []Limit) (labels []string, errLabel string) {
	labels = make([]string, len(limits))
	for i, l := range limits {
		labels[i] = l.String()
	}
	return labels, strings.Join(labels, ",")
}
