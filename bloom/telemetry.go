package bloom

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/surgekit/surge/internal/otelx"
)

// Telemetry names (DESIGN: the OpenTelemetry contract). Every MightContain answer is counted once
// per key in surge.bloom.checks with surge.bloom.result = maybe, absent or error; a [Redis]
// filter adds surge.bloom.name.
const (
	metricChecks = "surge.bloom.checks"
	attrResult   = "surge.bloom.result"
	attrName     = "surge.bloom.name"
)

// checks counts MightContain answers. Its option slices are built once, so counting allocates
// nothing and costs an atomic load when no SDK is installed.
type checks struct {
	c                   metric.Int64Counter
	maybe, absent, fail []metric.AddOption
}

func newChecks(mp metric.MeterProvider, extra ...attribute.KeyValue) *checks {
	m := otelx.Meter(mp, otelx.ScopePrefix+"bloom")
	opts := func(result string) []metric.AddOption {
		kv := append([]attribute.KeyValue{attribute.String(attrResult, result)}, extra...)
		return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
	}
	return &checks{
		c: otelx.Must(m.Int64Counter(metricChecks,
			metric.WithDescription("Bloom filter membership checks, by answer"), metric.WithUnit("{check}"))),
		maybe:  opts("maybe"),
		absent: opts("absent"),
		fail:   opts("error"),
	}
}

func (k *checks) answer(ctx context.Context, maybe bool) {
	if maybe {
		k.c.Add(ctx, 1, k.maybe...)
	} else {
		k.c.Add(ctx, 1, k.absent...)
	}
}

func (k *checks) answers(ctx context.Context, out []bool) {
	var n int64
	for _, b := range out {
		if b {
			n++
		}
	}
	if n > 0 {
		k.c.Add(ctx, n, k.maybe...)
	}
	if a := int64(len(out)) - n; a > 0 {
		k.c.Add(ctx, a, k.absent...)
	}
}

func (k *checks) failed(ctx context.Context, n int) { k.c.Add(ctx, int64(n), k.fail...) }
