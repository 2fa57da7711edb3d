// Package redistest starts Redis for tests: miniredis in-process ([Mini]), a real redis-server on a
// free loopback port ([Server]) and a real Redis Cluster ([Cluster]).
//
// Real servers need redis-server (and, for clusters, redis-cli) on PATH. Where they are missing
// the test is skipped with a message saying how to install them, unless the environment sets
// SURGE_REQUIRE_SERVERS=1 (as CI does), where it fails instead. Every process a helper starts is
// killed by its PID when the test ends.
package redistest
