// Package benchcmp measures surge against the libraries its users would pick instead, side by
// side in one process, on one private redis-server and one in-process Kafka cluster.
//
// It is its own module so that the peers (go-redis/cache, go-zero, bsm/redislock, redsync,
// redis_rate, ulule/limiter) never enter surge's go.mod. Run everything and rewrite
// BENCHMARKS.md at the repository root with:
//
//	bash internal/benchcmp/run.sh
package benchcmp
