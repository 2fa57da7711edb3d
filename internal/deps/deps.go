//go:build tools

// Package deps pins the module's dependencies while the packages that use them are written.
// It is removed once every dependency is imported by real code.
package deps

import (
	_ "github.com/alicebob/miniredis/v2"
	_ "github.com/bits-and-blooms/bloom/v3"
	_ "github.com/gin-gonic/gin"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/maypok86/otter/v2"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/stretchr/testify/require"
	_ "github.com/twmb/franz-go/pkg/kadm"
	_ "github.com/twmb/franz-go/pkg/kfake"
	_ "github.com/twmb/franz-go/pkg/kgo"
	_ "go.uber.org/goleak"
	_ "golang.org/x/sync/singleflight"
	_ "golang.org/x/time/rate"
)
