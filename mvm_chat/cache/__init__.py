"""Response cache and key-value backends: Redis, or in-process when Redis is not configured."""

from mvm_chat.cache.backends import CacheBackend, MemoryCache, RedisCache, create_cache

__all__ = ["CacheBackend", "MemoryCache", "RedisCache", "create_cache"]
