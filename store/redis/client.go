package redisstore

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/claude-lb/claude-lb/config"
)

// Client tuning: fail fast, so that a dead or slow Redis sends the gateway to its local state
// quickly instead of holding requests.
const (
	dialTimeout = time.Second
	ioTimeout   = 500 * time.Millisecond
	poolSize    = 16
)

// NewClient builds a client from the store.redis settings: URL (redis://, rediss:// or
// unix://) for one server, or Addrs for a Cluster, or Addrs with MasterName for Sentinel.
// Username, Password (or PasswordFile) and DB override what the URL says. Timeouts are short
// and follow the context (ContextTimeoutEnabled). Errors never contain the password.
func NewClient(cfg *config.Redis) (redis.UniversalClient, error) {
	if cfg == nil || (cfg.URL == "" && len(cfg.Addrs) == 0) {
		return nil, errNoRedis
	}
	if cfg.URL != "" && len(cfg.Addrs) > 0 {
		return nil, errors.New("store.redis: set url or addrs, not both")
	}
	password := cfg.Password.Reveal()
	if password == "" && cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("store.redis.password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	rw := ioTimeout
	if cfg.Timeout > 0 {
		rw = cfg.Timeout
	}
	if cfg.URL != "" {
		o, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("store.redis.url: %w", redactURLError(err))
		}
		if cfg.Username != "" {
			o.Username = cfg.Username
		}
		if password != "" {
			o.Password = password
		}
		if cfg.DB != 0 {
			o.DB = cfg.DB
		}
		o.ContextTimeoutEnabled = true
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = dialTimeout, rw, rw
		o.PoolSize, o.MinIdleConns, o.PoolTimeout = poolSize, 1, rw+dialTimeout
		o.MaxRetries = 1
		o.DisableIdentity = true
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		return redis.NewClient(o), nil
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                    cfg.Addrs,
		MasterName:               cfg.MasterName,
		Username:                 cfg.Username,
		Password:                 password,
		DB:                       cfg.DB,
		ContextTimeoutEnabled:    true,
		DialTimeout:              dialTimeout,
		ReadTimeout:              rw,
		WriteTimeout:             rw,
		PoolSize:                 poolSize,
		MinIdleConns:             1,
		PoolTimeout:              rw + dialTimeout,
		MaxRetries:               1,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}), nil
}

// redactURLError drops the URL, which may hold a password, from url.Parse's errors.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("invalid URL: %w", ue.Err)
	}
	return err
}
