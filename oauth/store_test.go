package oauth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/claude-lb/claude-lb/internal/testredis"
)

// testStores runs fn against every TokenStore implementation.
func testStores(t *testing.T, fn func(t *testing.T, s TokenStore)) {
	t.Run("memory", func(t *testing.T) { fn(t, NewMemoryTokenStore()) })
	t.Run("redis", func(t *testing.T) {
		fn(t, NewRedisTokenStore(testredis.Start(t).Client(), "t", nil))
	})
	t.Run("redis encrypted", func(t *testing.T) {
		fn(t, NewRedisTokenStore(testredis.Start(t).Client(), "t", []byte("key")))
	})
}

func TestTokenStoreContract(t *testing.T) {
	testStores(t, func(t *testing.T, s TokenStore) {
		ctx := t.Context()
		if tok, ver, err := s.Get(ctx, "a"); err != nil || ver != 0 || tok.AccessToken != "" {
			t.Fatalf("empty store: %v %d %v", tok, ver, err)
		}
		exp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		t1 := Token{AccessToken: "a1", RefreshToken: "r1", ExpiresAt: exp, Extra: map[string]any{"scope": "x"}}
		if err := s.Put(ctx, "a", t1, 1); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, "a", Token{AccessToken: "old"}, 1); !errors.Is(err, ErrStale) {
			t.Errorf("put of the same version: %v, want ErrStale", err)
		}
		if err := s.Put(ctx, "a", Token{AccessToken: "older"}, 0); !errors.Is(err, ErrStale) {
			t.Errorf("put of an older version: %v, want ErrStale", err)
		}
		got, ver, err := s.Get(ctx, "a")
		if err != nil || ver != 1 || got.AccessToken != "a1" || got.RefreshToken != "r1" || !got.ExpiresAt.Equal(exp) || got.Extra["scope"] != "x" {
			t.Fatalf("get = %+v v%d %v", got, ver, err)
		}
		if err := s.Put(ctx, "a", Token{AccessToken: "a5", RefreshToken: "r5"}, 5); err != nil {
			t.Fatal(err)
		}
		if got, ver, _ := s.Get(ctx, "a"); ver != 5 || got.AccessToken != "a5" {
			t.Errorf("after put v5: %v v%d", got, ver)
		}
		if _, ver, _ := s.Get(ctx, "b"); ver != 0 {
			t.Errorf("accounts share a version")
		}

		// Lock: one owner at a time; release only by its owner; expiry frees it.
		if ok, err := s.Lock(ctx, "a", "one", time.Minute); !ok || err != nil {
			t.Fatalf("first lock: %v %v", ok, err)
		}
		if ok, _ := s.Lock(ctx, "a", "two", time.Minute); ok {
			t.Errorf("second owner took a held lock")
		}
		if ok, _ := s.Lock(ctx, "b", "two", time.Minute); !ok {
			t.Errorf("locks of different accounts collide")
		}
		if err := s.Unlock(ctx, "a", "two"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.Lock(ctx, "a", "two", time.Minute); ok {
			t.Errorf("a non-owner released the lock")
		}
		if err := s.Unlock(ctx, "a", "one"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.Lock(ctx, "a", "two", 150*time.Millisecond); !ok {
			t.Errorf("lock not free after its owner released it")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			ok, err := s.Lock(ctx, "a", "three", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("an expired lock was never freed")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestRedisTokenStoreEncryption(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client()
	ctx := t.Context()
	tok := Token{AccessToken: "sk-ant-oat01-SECRETACCESS", RefreshToken: "sk-ant-ort01-SECRETREFRESH"}

	enc := NewRedisTokenStore(rdb, "p", []byte("the key"))
	if err := enc.Put(ctx, "team", tok, 1); err != nil {
		t.Fatal(err)
	}
	raw, err := rdb.HGetAll(ctx, "{p}:oauth:token:team").Result()
	if err != nil {
		t.Fatal(err)
	}
	if raw["f"] != "aesgcm" || raw["v"] != "1" {
		t.Errorf("stored fields = %v", raw)
	}
	if strings.Contains(raw["t"], "SECRET") {
		t.Errorf("the encrypted payload contains the token in clear")
	}
	if ttl := rdb.PTTL(ctx, "{p}:oauth:token:team").Val(); ttl <= 0 {
		t.Errorf("token key has no TTL (%v)", ttl)
	}
	if got, _, err := NewRedisTokenStore(rdb, "p", []byte("the key")).Get(ctx, "team"); err != nil || got.AccessToken != tok.AccessToken {
		t.Errorf("same key cannot read it back: %v %v", got, err)
	}
	for name, s := range map[string]*RedisTokenStore{
		"wrong key": NewRedisTokenStore(rdb, "p", []byte("another key")),
		"no key":    NewRedisTokenStore(rdb, "p", nil),
	} {
		_, _, err := s.Get(ctx, "team")
		if err == nil || !strings.Contains(err.Error(), "encryption_key") || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: err = %v, want a clear encryption_key error", name, err)
		}
	}
	// The ciphertext is bound to its account: copied under another name it does not decrypt.
	rdb.HSet(ctx, "{p}:oauth:token:other", "v", raw["v"], "t", raw["t"], "f", raw["f"])
	if _, _, err := enc.Get(ctx, "other"); err == nil {
		t.Errorf("a ciphertext moved to another account decrypted")
	}

	// A plaintext pair written before a key was set stays readable; the next put encrypts.
	plain := NewRedisTokenStore(rdb, "p", nil)
	if err := plain.Put(ctx, "solo", tok, 1); err != nil {
		t.Fatal(err)
	}
	if got, _, err := enc.Get(ctx, "solo"); err != nil || got.RefreshToken != tok.RefreshToken {
		t.Errorf("keyed store cannot read a plaintext pair: %v", err)
	}
}
